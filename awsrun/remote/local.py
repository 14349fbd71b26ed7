"""The local provider's "instance": this machine, reached with a login shell instead of SSH."""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from awsrun.errors import RemoteError
from awsrun.remote.base import Command, FileChanged, LineSink, Result, as_shell


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

    def sftp(self) -> "LocalFiles":
        return LocalFiles(self.home)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class FileAttrs:
    filename: str
    st_mode: int
    st_size: int
    st_mtime: int


class LocalFiles:
    """The few calls of paramiko's SFTPClient that awsrun.transfer.sftp_push makes, on this machine's files
    (the local provider without rsync): the same code moves files, as plain streamed copies. A relative
    path is below `home`, as SFTP's are below the login's home."""

    def __init__(self, home: Path):
        self.home = home

    def _here(self, path: str) -> str:
        return os.path.join(self.home, os.path.expanduser(path))

    def listdir_attr(self, path: str) -> list[FileAttrs]:
        out = []
        with os.scandir(self._here(path)) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                out.append(FileAttrs(entry.name, info.st_mode, info.st_size, int(info.st_mtime)))
        return out

    def lstat(self, path: str) -> FileAttrs:
        info = os.lstat(self._here(path))
        return FileAttrs(os.path.basename(path), info.st_mode, info.st_size, int(info.st_mtime))

    def stat(self, path: str) -> FileAttrs:
        info = os.stat(self._here(path))
        return FileAttrs(os.path.basename(path), info.st_mode, info.st_size, int(info.st_mtime))

    def open(self, path: str, mode: str = "rb"):
        flags = os.O_NOFOLLOW | (os.O_RDONLY if "r" in mode else os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        return os.fdopen(os.open(self._here(path), flags, 0o600), mode)

    def readlink(self, path: str) -> str:
        return os.readlink(self._here(path))

    def symlink(self, source: str, dest: str) -> None:
        os.symlink(source, self._here(dest))

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        os.mkdir(self._here(path), mode)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._here(path), mode)

    def utime(self, path: str, times: tuple[float, float]) -> None:
        os.utime(self._here(path), times)

    def posix_rename(self, old: str, new: str) -> None:
        os.rename(self._here(old), self._here(new))

    def remove(self, path: str) -> None:
        os.unlink(self._here(path))

    def rmdir(self, path: str) -> None:
        os.rmdir(self._here(path))

    def put_small_files(self, items: list) -> list[Exception | None]:
        """What awsrun.remote.ssh.put_small_files does over SFTP, one file after the other."""
        errors: list[Exception | None] = []
        for item in items:
            try:
                with self.open(item.temp, "wb") as handle:
                    handle.write(item.data)
                self.chmod(item.temp, item.mode)
                self.utime(item.temp, (item.seconds, item.seconds))
                self.posix_rename(item.temp, item.target)
                errors.append(None)
            except OSError as exc:
                errors.append(exc)
        return errors

    def get_small_files(self, items: list[tuple[str, int]]) -> list:
        """What awsrun.remote.ssh.get_small_files does over SFTP, one file after the other."""
        out: list = []
        for path, size in items:
            try:
                with self.open(path, "rb") as handle:
                    data = handle.read(size + 1)
            except OSError as exc:
                out.append(exc)
                continue
            out.append(data if len(data) == size else FileChanged("it is not its listed size"))
        return out

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
