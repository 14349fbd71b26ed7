"""Locks in AWSRUN_HOME: what two awsrun processes must not do at once (fcntl locks, released by the kernel
when the process ends, so a killed command never leaves one behind)."""
from __future__ import annotations

import fcntl
import os
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from awsrun.home import Home


@contextmanager
def file_lock(path: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made 0600 if missing), writing this process's pid into it. When
    another process holds it, `on_wait` gets the holder's pid (or '?') once, and this one waits for it
    (Ctrl-C ends the wait)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(os.pread(fd, 32, 0).decode(errors="replace").strip() or "?")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def cluster_lock(home: Home, cluster: str, purpose: str,
                 on_wait: Callable[[str], None]) -> AbstractContextManager[None]:
    """Hold `AWSRUN_HOME/locks/<purpose>-<cluster>.lock` (`file_lock`)."""
    directory = home.root / "locks"
    directory.mkdir(mode=0o700, exist_ok=True)
    return file_lock(directory / f"{purpose}-{cluster}.lock", on_wait)
