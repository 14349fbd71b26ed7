"""Per-cluster locks in AWSRUN_HOME: what two awsrun processes must not do at once (fcntl locks, released
by the kernel when the process ends, so a killed command never leaves one behind)."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Callable, Iterator

from awsrun.home import Home


@contextmanager
def cluster_lock(home: Home, cluster: str, purpose: str, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold `AWSRUN_HOME/locks/<purpose>-<cluster>.lock`. When another process holds it, `on_wait` gets
    the holder's pid (or '?') once, and this one waits for it (Ctrl-C ends the wait)."""
    directory = home.root / "locks"
    directory.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(directory / f"{purpose}-{cluster}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
