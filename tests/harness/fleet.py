"""The loopback "fleet": the sshd hosts plus the ProxyCommand's state (which instance is which host)."""
from __future__ import annotations

import base64
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from awsrun.remote.hostkeys import fingerprint
from tests.harness import ec2_endpoint
from tests.harness.sshd import SshHost, start_hosts

PROXY = Path(__file__).parent / "proxy.py"


@dataclass
class Fleet:
    base: Path
    hosts: list[SshHost]

    @classmethod
    def start(cls, base: Path, count: int) -> "Fleet":
        base.chmod(0o711)  # user ubuntu must reach each host's TMUX_TMPDIR below it
        fleet = cls(base, start_hosts(base, count))
        ec2_endpoint.print_host_keys_at_boot([
            fingerprint(base64.b64decode(host.host_public_key.split()[1])) for host in fleet.hosts])
        (base / "hosts.json").write_text(json.dumps({
            h.name: {"address": h.address, "port": h.port, "home": str(h.home)} for h in fleet.hosts
        }))
        return fleet

    @property
    def proxy_command(self) -> str:
        """OpenSSH-style ProxyCommand (tokens %h %p) that awsrun is configured with in tests."""
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(PROXY))} {shlex.quote(str(self.base))} %h %p %r"

    def bindings(self) -> dict:
        path = self.base / "bindings.json"
        return json.loads(path.read_text()) if path.exists() else {"ips": {}, "instances": {}}

    def host_of(self, instance_id: str) -> SshHost:
        name = self.bindings()["instances"][instance_id]
        return next(h for h in self.hosts if h.name == name)

    def reset(self) -> None:
        (self.base / "bindings.json").unlink(missing_ok=True)
        for host in self.hosts:
            host.reset()

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()
