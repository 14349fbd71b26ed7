"""AWSRUN_HOME: the one directory holding everything awsrun keeps on the user's machine."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from awsrun.errors import StateError


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Home":
        env = os.environ if environ is None else environ
        raw = env.get("AWSRUN_HOME") or "~/.awsrun"
        try:
            return cls(Path(raw).expanduser())
        except RuntimeError:  # what expanduser says when ~ or ~user names no home directory
            user = raw.split("/", 1)[0][1:]
            why = f"there is no user {user!r} to expand ~{user}" if user else "HOME is unset, so ~ names no directory"
            raise StateError(
                f"AWSRUN_HOME {raw} is not usable: {why}",
                hint="point AWSRUN_HOME at a directory you can write, by its absolute path",
            ) from None

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def sockets_dir(self) -> Path:
        return self.root / "sockets"

    def ensure(self) -> "Home":
        """Create the directory tree (private to the user) or fail with a clear message."""
        try:
            for path in (self.root, self.keys_dir, self.logs_dir, self.sockets_dir):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"  # one per process: concurrent commands never race
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise StateError(
                f"AWSRUN_HOME {self.root} is not usable: {exc.strerror or exc}",
                hint="point AWSRUN_HOME at a directory you can write, or fix its permissions",
            ) from None
        return self
