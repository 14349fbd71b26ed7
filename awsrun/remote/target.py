"""Where an SSH connection goes and how it is checked: one description (SshTarget) that both SSH layers
use, paramiko (awsrun.remote.ssh, first contact) and the system OpenSSH (awsrun.remote.openssh,
every day), so the key, the pinned host key and the ProxyCommand cannot differ between them."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

NO_FORWARDING = ("-o", "ForwardAgent=no", "-o", "ForwardX11=no", "-o", "ClearAllForwardings=yes")
CLEAR_FORWARDINGS = ("-o", "ClearAllForwardings=yes")


@dataclass(frozen=True)
class SshTarget:
    host: str                      # what %h is: an address, or an instance id for SSM
    user: str
    key_path: Path
    known_hosts: Path
    alias: str                     # the name the host key is pinned under (instance id, or host:port)
    port: int = 22
    proxy_command: str | None = None
    expected_fingerprints: frozenset[str] = field(default_factory=frozenset)

    def proxy_argv_string(self) -> str | None:
        """The ProxyCommand with OpenSSH's tokens replaced by shell-quoted values."""
        if not self.proxy_command:
            return None
        values = {"%h": self.host, "%p": str(self.port), "%r": self.user, "%%": "%"}
        words = [
            "".join(values.get(part, part) for part in _split_tokens(word))
            for word in shlex.split(self.proxy_command)
        ]
        return shlex.join(words)

    def openssh_options(self) -> list[str]:
        """The system ssh's options for this target: this key only, awsrun's own known_hosts with the
        host key pinned under `alias` (never asked, never replaced), the ProxyCommand, no prompts, and
        nothing forwarded whatever the user's ssh config says (`ForwardAgent yes` there would hand the
        instance the laptop's agent); `tunnel` drops ClearAllForwardings, its -L being the point."""
        options = [
            "-i", str(self.key_path),
            "-p", str(self.port),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={self.alias}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            *NO_FORWARDING,
        ]
        if self.proxy_command:
            options += ["-o", f"ProxyCommand={self.proxy_command}"]
        return options

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"


def _split_tokens(word: str) -> list[str]:
    parts, i = [], 0
    while i < len(word):
        if word[i] == "%" and i + 1 < len(word):
            parts.append(word[i:i + 2])
            i += 2
        else:
            parts.append(word[i])
            i += 1
    return parts
