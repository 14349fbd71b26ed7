"""Which addresses may reach SSH: `--ssh-cidr`, else the caller's own address as a /32 (or /128).

Never the whole internet unless the user asks for it explicitly, and then with a warning.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable

from awsrun.errors import ConfigError
from awsrun.providers.aws_network_requests import parse_cidr
from awsrun.settings import Settings

LOOKUP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SshCidr:
    cidr: str
    source: str
    warning: str | None = None


def looks_up_address(settings: Settings) -> bool:
    """Whether resolve_ssh_cidr asks the network (no ssh_cidr given, the lookup on): callers check local
    configuration, region and credentials first, so that offline this error never hides theirs."""
    return not settings.ssh_cidr and settings.caller_ip_url.strip().lower() not in _OFF


def resolve_ssh_cidr(settings: Settings, fetch: Callable[[str], str] | None = None) -> SshCidr:
    if settings.ssh_cidr:
        cidr = parse_cidr(settings.ssh_cidr)
        warning = None
        if ipaddress.ip_network(cidr).prefixlen == 0:
            warning = (f"SSH is open to the whole internet ({cidr}): anyone can try to log in; "
                       "only key login is allowed, but prefer your own address (the default)")
        return SshCidr(cidr, "ssh_cidr", warning)
    url = settings.caller_ip_url.strip()
    if url.lower() in _OFF:
        raise ConfigError(
            "no --ssh-cidr given and looking up your address is off (caller_ip_url = off)",
            hint="pass --ssh-cidr YOUR.ADDRESS/32 (or set ssh_cidr in awsrun.toml)",
        )
    text = (fetch or _fetch)(url)
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ConfigError(f"{url} did not answer with an IP address: {text.strip()[:60]!r}",
                          hint="pass --ssh-cidr YOUR.ADDRESS/32") from None
    return SshCidr(str(ipaddress.ip_network(address)), f"your address according to {url}")


_OFF = ("off", "", "none")


def _fetch(url: str) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=LOOKUP_TIMEOUT_S) as response:  # noqa: S310 (a configured URL)
            return response.read(100).decode(errors="replace")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise ConfigError(f"cannot look up your address at {url}: {getattr(exc, 'reason', exc)}",
                          hint="pass --ssh-cidr YOUR.ADDRESS/32, or set caller_ip_url") from None
