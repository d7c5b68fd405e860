"""The client's address, as the audit trail records it, the rate limits count it and the logs
show it."""

import ipaddress

from flask import request

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip() -> IPAddress | None:
    """The client's IP address, or None where what we have is no plain address.

    `request.remote_addr` is the TCP peer, or with TRUSTED_PROXY_HOPS what ProxyFix took from
    X-Forwarded-For.
    """
    return ip_of(request.remote_addr)


def ip_of(remote_addr: str | None) -> IPAddress | None:
    """The address in a WSGI REMOTE_ADDR, or None where it holds no plain address.

    A client that reaches the app around the proxy can write X-Forwarded-For itself: anything
    but an address, or an IPv6 address with a zone id (`fe80::1%eth0`, of any length), is not
    taken. An IPv4 address mapped into IPv6 is the IPv4 address.
    """
    try:
        ip = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return None
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip
