"""Keeps a Python process's network traffic on loopback: connecting to, or resolving, anything else
raises. Installed in the pytest process by conftest and in every subprocess through sitecustomize."""
from __future__ import annotations

import ipaddress
import socket

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_installed = False


class NetworkBlocked(OSError):
    pass


def is_loopback(host: object) -> bool:
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def _check(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if not is_loopback(host):
                raise NetworkBlocked(f"netguard: blocked connection to {host!r} (tests reach loopback only)")

    def connect(self, address):  # noqa: ANN001
        _check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):  # noqa: ANN001
        _check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001
        if not is_loopback(host):
            try:
                ipaddress.ip_address(str(host))
            except ValueError:
                raise socket.gaierror(f"netguard: refused to resolve {host!r} (tests reach loopback only)")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
