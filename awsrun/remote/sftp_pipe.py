"""SFTP over the system ssh: `ssh ... -s DEST sftp` (over the node's kept master) as a child process whose
pipes carry the SFTP packets. paramiko's SFTP client needs of its channel only send, recv, close and (for
pipelined writes) recv_ready: PipeChannel gives it those over the pipes, so the encryption is ssh's and
the SFTP framing paramiko's (awsrun.remote.ssh.sftp_over builds the client)."""
from __future__ import annotations

import os
import select
import subprocess
import tempfile
from pathlib import Path

from awsrun.errors import RemoteError
from awsrun.remote.process import stop_process


class PipeChannel:
    """The ssh process's stdin and stdout as the byte channel of one SFTP session."""

    def __init__(self, process: subprocess.Popen, errors):
        self.process, self.errors = process, errors
        self._in, self._out = process.stdin.fileno(), process.stdout.fileno()

    def send(self, data: bytes) -> int:
        try:
            return os.write(self._in, data)
        except (BrokenPipeError, OSError):
            return 0  # paramiko reads 0 as the end of the session (EOFError)

    def recv(self, size: int) -> bytes:
        return os.read(self._out, size)

    def recv_ready(self) -> bool:
        return bool(select.select([self._out], [], [], 0)[0])

    def get_name(self) -> str:
        return "ssh-sftp"

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        stop_process(self.process, grace_s=5)
        self.errors.close()

    def complaint(self) -> str:
        """ssh's own stderr, first line, for an error message."""
        try:
            self.errors.seek(0)
            text = self.errors.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        return next((line.strip() for line in text.splitlines() if line.strip()), "")


def start(argv: list[str], cwd: Path | None, where: str) -> PipeChannel:
    """Run `argv` (ssh ending in `-s DEST sftp`) and hand back its pipes as a channel."""
    errors = tempfile.TemporaryFile()
    try:
        process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                   bufsize=0)
    except OSError as exc:
        errors.close()
        raise RemoteError(f"cannot run the system ssh for SFTP to {where}: {exc.strerror or exc}") from None
    return PipeChannel(process, errors)
