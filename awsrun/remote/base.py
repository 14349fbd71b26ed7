"""The one Remote interface every use case talks to, and its immutable command result."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from awsrun.errors import RemoteError

Command = str | Sequence[str]
LineSink = Callable[[str], None]


def as_shell(command: Command) -> str:
    """A command for the remote shell: argv lists are quoted word by word, strings are taken as built."""
    return command if isinstance(command, str) else shlex.join(command)


@dataclass(frozen=True)
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self, what: str | None = None) -> "Result":
        if self.exit_code != 0:
            tail = (self.stderr.strip() or self.stdout.strip()).splitlines()[-5:]
            detail = " | ".join(tail) if tail else "no output"
            raise RemoteError(f"{what or self.command!r} failed with exit {self.exit_code}: {detail}")
        return self


class FileChanged(Exception):
    """A file read from the instance is not the size it was listed with (it grew, shrank or was replaced)."""


class Remote(Protocol):
    """A shell on "the instance". Implementations: SshRemote, LocalRemote."""

    name: str

    def run(
        self,
        command: Command,
        *,
        stdin: bytes | None = None,
        on_line: LineSink | None = None,
        timeout: float | None = None,
    ) -> Result: ...

    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o644) -> None: ...

    def get_bytes(self, remote_path: str) -> bytes: ...

    def sftp(self):
        """A file session for the transfer without rsync (awsrun.transfer.sftp_session): paramiko's SFTPClient over
        SSH, LocalFiles on this machine; the caller closes it."""
        ...

    def interactive_argv(self, command: Command | None = None) -> list[str]:
        """argv of a local process that gives the user a terminal on the instance (for attach / ssh)."""
        ...

    def close(self) -> None: ...

