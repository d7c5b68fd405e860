"""The client's address, as the audit trail records it and the rate limits count it."""

import ipaddress

from flask import request


def client_ip() -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP address, or None where what we have is no plain address.

    `request.remote_addr` is the TCP peer, or with TRUSTED_PROXY_HOPS what ProxyFix took from
    X-Forwarded-For. A client that reaches the app around the proxy can write that header
    itself: anything but an address, or an IPv6 address with a zone id (`fe80::1%eth0`, of any
    length), is not taken.
    """
    try:
        ip = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return None
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip
