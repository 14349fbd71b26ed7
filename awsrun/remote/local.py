"""The local provider's "instance": this machine, reached with a login shell instead of SSH."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from awsrun.errors import RemoteError
from awsrun.remote.base import Command, LineSink, Result, as_shell


class LocalRemote:
    name = "local"

    def __init__(self, home: Path | None = None):
        self.home = home or Path.home()

    def run(
        self,
        command: Command,
        *,
        stdin: bytes | None = None,
        on_line: LineSink | None = None,
        timeout: float | None = None,
    ) -> Result:
        text = as_shell(command)
        process = subprocess.Popen(
            ["bash", "-c", text],
            cwd=self.home,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            if on_line is None:
                out, err = process.communicate(stdin, timeout=timeout)
            else:
                out, err = _stream(process, stdin, on_line, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RemoteError(f"local command did not finish within {timeout:.0f}s: {text}") from None
        return Result(text, process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        target = Path(os.path.expanduser(remote_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, mode)
        os.replace(temp, target)

    def get_bytes(self, remote_path: str) -> bytes:
        try:
            return Path(os.path.expanduser(remote_path)).read_bytes()
        except OSError as exc:
            raise RemoteError(f"cannot read {remote_path}: {exc.strerror or exc}") from None

    def interactive_argv(self, command: Command | None = None) -> list[str]:
        if command is None:
            return [os.environ.get("SHELL", "bash"), "-l"]
        return ["bash", "-c", as_shell(command)]

    def close(self) -> None:
        pass


def _stream(process: subprocess.Popen, stdin: bytes | None, on_line: LineSink, timeout: float | None):
    if stdin is not None and process.stdin is not None:
        process.stdin.write(stdin)
        process.stdin.close()
    out = bytearray()
    assert process.stdout is not None
    for raw in process.stdout:
        out += raw
        on_line(raw.decode(errors="replace").rstrip("\n"))
    _, err = process.communicate(timeout=timeout)
    return bytes(out), err
