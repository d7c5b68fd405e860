"""DevLab's nginx configuration (deploy/nginx/devlab.conf) on this machine, as the tests run it.

The file is written for its real place: ports 80 and 443, the upstream instances `api1:8005`
and `api2:8005` (names that only Docker Compose resolves), a certificate under /etc/nginx/tls.
`loopback_site` makes a copy that differs in exactly those, and refuses to go on if any of them
is not found where expected, so that the copy never drifts from the file; `write_config` puts it
in an nginx.conf of its own, with every path in one folder, for an unprivileged nginx.

`python scripts/nginx_loopback.py` (`make lint`) checks the file with `nginx -t` that way: nginx
resolves upstream names and reads the certificate even to check, so the file itself cannot be
checked outside its containers. The topology test (tests/e2e) serves through such a copy.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
SITE = PROJECT / "deploy" / "nginx" / "devlab.conf"
DEV_CERT = PROJECT / "scripts" / "dev-cert.sh"


class SiteChanged(RuntimeError):
    """devlab.conf no longer has what the loopback copy replaces."""


def nginx_binary() -> str:
    """Debian's nginx, which lives in /usr/sbin (not on an ordinary user's PATH)."""
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        raise FileNotFoundError("nginx not found: `make e2e` and `make lint` install Debian's.")
    return found


def _replace(text: str, pattern: str, replacement, expected: int, what: str) -> str:
    result, count = re.subn(pattern, replacement, text)
    if count != expected:
        raise SiteChanged(f"{SITE.name}: expected {expected} {what}, found {count}")
    return result


def loopback_site(
    site: str, *, http_port: int, https_port: int, upstream_ports: list[int], tls_dir: Path
) -> str:
    """`site` with 127.0.0.1 and these ports for its listens and upstreams, and the certificate
    and key from `tls_dir`; everything else as written."""
    # Directives only, at the start of their lines: never a word of a comment.
    site = _replace(
        site, r"(?m)^(\s*listen) 80\b", rf"\1 127.0.0.1:{http_port}", 2, "listens on 80"
    )
    site = _replace(
        site, r"(?m)^(\s*listen) 443\b", rf"\1 127.0.0.1:{https_port}", 2, "listens on 443"
    )
    ports = iter(upstream_ports)
    site = _replace(
        site,
        r"(?m)^(\s*server) api\d+:8005\b",
        lambda match: f"{match[1]} 127.0.0.1:{next(ports)}",
        len(upstream_ports),
        "upstream servers",
    )
    return _replace(
        site,
        r"(?m)^(\s*ssl_certificate(?:_key)?) /etc/nginx/tls/",
        lambda match: f"{match[1]} {tls_dir}/",
        2,
        "certificate paths",
    )


def write_config(
    directory: Path,
    *,
    http_port: int,
    https_port: int,
    upstream_ports: list[int],
    tls_dir: Path,
    logs: Path | None = None,
) -> Path:
    """Write nginx.conf (and the site it includes) into `directory`; return its path.

    The pid file and nginx's temporary files stay in `directory`, the logs in `logs` (by default
    `directory` too). The access log names the request's id and the instances nginx tried.

    nginx runs as one process (`master_process off`), which serves as its workers would: a
    master's workers outlive it when it is killed, and a test run that dies must leave no
    server behind.
    """
    logs = logs or directory
    site = loopback_site(
        SITE.read_text(),
        http_port=http_port,
        https_port=https_port,
        upstream_ports=upstream_ports,
        tls_dir=tls_dir,
    )
    (directory / "devlab.conf").write_text(site)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    main.write_text(
        f"""master_process off;
pid {directory / "nginx.pid"};
error_log {logs / "nginx-error.log"} notice;
events {{
    worker_connections 512;
}}
http {{
    log_format devlab '$remote_addr "$request" $status $request_id upstream=$upstream_addr';
    access_log {logs / "nginx-access.log"} devlab;
{temp_paths}
    include {directory / "devlab.conf"};
}}
"""
    )
    return main


def make_certificate(tls_dir: Path, host: str = "localhost") -> None:
    """A self-signed pair from scripts/dev-cert.sh, as a developer would make it."""
    subprocess.run(["/bin/sh", str(DEV_CERT), str(tls_dir), host], check=True, capture_output=True)  # noqa: S603


def check() -> int:
    """`nginx -t` on a loopback copy of devlab.conf; the exit code of nginx."""
    with tempfile.TemporaryDirectory(prefix="devlab-nginx-check-") as folder:
        directory = Path(folder)
        make_certificate(directory / "tls")
        main = write_config(
            directory,
            http_port=8080,
            https_port=8443,
            upstream_ports=[8005, 8006],
            tls_dir=directory / "tls",
        )
        result = subprocess.run(  # noqa: S603
            [nginx_binary(), "-t", "-q", "-p", str(directory), "-e", "stderr", "-c", str(main)],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        print(result.stderr.replace(folder, "<tmp>"), end="", file=sys.stderr)
        print(f"{SITE.relative_to(PROJECT)}: nginx -t failed", file=sys.stderr)
    else:
        print(f"{SITE.relative_to(PROJECT)}: nginx -t ok")
    return result.returncode


if __name__ == "__main__":
    sys.exit(check())
