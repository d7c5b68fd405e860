#!/bin/sh
# A self-signed TLS certificate and key for trying DevLab's nginx (deploy/nginx/devlab.conf)
# on your own machine; never for production, where the certificate comes from a CA.
#
#   scripts/dev-cert.sh [DIR] [HOST]
#
# writes DIR/devlab.crt and DIR/devlab.key (mode 0600), for HOST (default localhost) and the
# loopback addresses, valid 30 days. DIR defaults to deploy/nginx/tls, which
# docker-compose.yml mounts into the nginx container (TLS_CERT_DIR chooses another).
set -eu

dir=${1:-deploy/nginx/tls}
host=${2:-localhost}
case $host in
    "" | *[!A-Za-z0-9.-]* | -* | .*)
        echo "dev-cert.sh: HOST must be a host name such as localhost or devlab.test" >&2
        exit 2
        ;;
esac
command -v openssl >/dev/null || { echo "dev-cert.sh: openssl not found" >&2; exit 1; }

names="DNS:localhost,IP:127.0.0.1,IP:::1"
[ "$host" = localhost ] || names="DNS:$host,$names"

mkdir -p "$dir"
# Written beside the old pair, then moved over it: nginx never reads half a file.
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=$host" \
    -addext "subjectAltName=$names" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$dir/devlab.key.new" -out "$dir/devlab.crt.new" 2>/dev/null
chmod 0644 "$dir/devlab.crt.new"
mv "$dir/devlab.key.new" "$dir/devlab.key"
mv "$dir/devlab.crt.new" "$dir/devlab.crt"
echo "$dir/devlab.crt and $dir/devlab.key: self-signed for $host, valid 30 days"
