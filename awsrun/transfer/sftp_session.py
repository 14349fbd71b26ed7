"""What the SFTP transfer's two directions share (awsrun.transfer.sftp_push pushes, awsrun.transfer.sftp_pull pulls):
the session to a Remote, SFTP's paths, reading a file's listed bytes and nothing else, and progress as
rsync reports it."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from awsrun.remote.base import FileChanged, Remote
from awsrun.transfer.rsync import Progress

CHUNK = 256 * 1024
NS = 1_000_000_000


@contextmanager
def open_files(remote: Remote) -> Iterator:
    """An SFTP session to `remote` (LocalFiles for this machine), closed at the end."""
    files = remote.sftp()
    try:
        yield files
    finally:
        try:
            files.close()
        except Exception:  # noqa: BLE001 (a session that broke closes as it can)
            pass


def session_errors(remote: Remote) -> tuple[type[BaseException], ...]:
    """What a broken or refusing session raises (paramiko's own error type among them over SSH)."""
    if getattr(remote, "target", None) is None:
        return (OSError, EOFError)
    from awsrun.remote.ssh import SFTP_ERRORS

    return SFTP_ERRORS


def sftp_path(path: str) -> str:
    """A path as SFTP names it: SFTP starts in the login's home, so `~/x` is `x`."""
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def tune(handle) -> None:
    """Pipelined writes on an SFTP file: no round trip per 32 KB (a local file has nothing to tune)."""
    if hasattr(handle, "set_pipelined"):
        handle.set_pipelined(True)


def blocks(handle, size: int) -> Iterator[bytes]:
    """The `size` bytes of an open file, in blocks; FileChanged when it holds fewer or more. An SFTP file
    is read ahead in a bounded window (awsrun.remote.ssh.read_ahead)."""
    if hasattr(handle, "sftp"):
        from awsrun.remote.ssh import read_ahead

        yield from read_ahead(handle, size)
        return
    left = size
    while left:
        block = handle.read(min(CHUNK, left))
        if not block:
            raise FileChanged("it ended before its listed size")
        left -= len(block)
        yield block
    if handle.read(1):
        raise FileChanged("it holds more than its listed size")


class Meter:
    """Progress as rsync reports it (bytes, percent, rate, ETA), a few times a second at most."""

    def __init__(self, total: int, on_progress: Progress | None):
        self.total, self.done, self.on_progress = total, 0, on_progress
        self.started = self.last = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.on_progress is not None and now - self.last >= 0.25:
            self.last = now
            self._report(now)

    def finish(self) -> None:
        if self.on_progress is not None and self.done:
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-6)
        left = int((self.total - self.done) / rate) if rate and self.total > self.done else 0
        percent = min(100, int(100 * self.done / self.total)) if self.total else 100
        self.on_progress(self.done, percent, f"{rate / 1e6:.2f}MB/s", f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}")


