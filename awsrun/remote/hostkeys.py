"""Host-key pinning: awsrun keeps its own known_hosts (OpenSSH format) and trusts a host's key on first
contact only, checked against the fingerprints the cloud printed when it can read them."""
from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from awsrun.errors import HostKeyError

_CONSOLE_FINGERPRINT = re.compile(r"(SHA256:[A-Za-z0-9+/]{43})")


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob: `SHA256:` + unpadded base64."""
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fingerprints_from_console(console_output: str) -> frozenset[str]:
    """The host key fingerprints cloud-init prints between its BEGIN/END SSH HOST KEY FINGERPRINTS marks."""
    start = console_output.find("BEGIN SSH HOST KEY FINGERPRINTS")
    end = console_output.find("END SSH HOST KEY FINGERPRINTS")
    if start < 0 or end < start:
        return frozenset()
    return frozenset(_CONSOLE_FINGERPRINT.findall(console_output[start:end]))


def forget_hint(alias: str, known_hosts: Path) -> str:
    return f"if the host was really rebuilt, forget its old key: ssh-keygen -R {alias} -f {known_hosts}"


class KnownHosts:
    """Reads and appends `alias keytype base64` lines; never rewrites what is pinned."""

    def __init__(self, path: Path):
        self.path = path

    def lookup(self, alias: str) -> dict[str, str]:
        """key type -> base64 blob pinned for `alias`."""
        pinned: dict[str, str] = {}
        if not self.path.exists():
            return pinned
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and alias in parts[0].split(","):
                pinned[parts[1]] = parts[2]
        return pinned

    def check(self, alias: str, key_type: str, key_b64: str, expected: frozenset[str] = frozenset()) -> None:
        """Accept a pinned key, pin a new one (if it matches `expected` when given), refuse a changed one."""
        pinned = self.lookup(alias)
        if pinned.get(key_type) == key_b64:
            return
        if pinned:
            raise HostKeyError(
                f"host key of {alias} changed since it was pinned: refusing to connect (possible interception)",
                hint=forget_hint(alias, self.path),
            )
        seen = fingerprint(base64.b64decode(key_b64))
        if expected and seen not in expected:
            raise HostKeyError(
                f"host key of {alias} ({seen}) is not among the fingerprints the instance printed at boot",
                hint="do not trust this host; check `awsrun status` and the instance's console output",
            )
        self._append(f"{alias} {key_type} {key_b64}\n")

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(line)
