"""Pull where rsync is missing here or on the instance: over SFTP (awsrun.transfer.sftp_session opens it), in
bounded memory whatever the size. Nothing from the instance is trusted: the listing (an SFTP walk that
follows no symlink) is checked as rsync's is (awsrun.transfer.rsync_pull.pull_plan: only regular files with plain
names, never through a symlink or over a local directory); each file is written through directory handles
that refuse symlinks, under a temporary name renamed when complete, and never with more bytes than the
listing declared: a file that grows, shrinks or goes away meanwhile is skipped with a warning. A file
whose size and mtime (to the second) match the local copy is not fetched again.
"""
from __future__ import annotations

import io
import math
import os
import re
import stat
from pathlib import Path
from typing import Callable, Iterator, Sequence

from awsrun.errors import NotFoundError, RemoteError
from awsrun.remote.base import FileChanged, Remote
from awsrun.transfer.ignore import glob_regex
from awsrun.transfer.rsync import Progress
from awsrun.transfer.rsync_pull import Listing, PullPlan, pull_plan
from awsrun.transfer.scan import TEMP_PREFIX, PullReport, check_name
from awsrun.transfer.sftp_push import BATCH_BYTES, BATCH_FILES, SMALL
from awsrun.transfer.sftp_session import (
    NS,
    Meter,
    blocks,
    open_files,
    session_errors,
    sftp_path,
)

_KIND = {stat.S_IFREG: "-", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFIFO: "p", stat.S_IFCHR: "c",
         stat.S_IFBLK: "b", stat.S_IFSOCK: "s"}
LARGEST = 1 << 62


# --- --include / --exclude, as rsync reads them ----------------------------------------------------

def rule(pattern: str, include: bool) -> tuple[re.Pattern, bool, bool]:
    """(regex over the path, dir_only, include). Like rsync: a pattern matches the path's end (a name, or
    names with their directories), one with a leading `/` the whole path from the top."""
    dir_only = pattern.endswith("/")
    body = pattern.rstrip("/")
    anchored = body.startswith("/")
    body = body.lstrip("/")
    regex = glob_regex(body) if anchored else r"(?:.*/)?" + glob_regex(body)
    return re.compile(regex, re.DOTALL), dir_only, include


def wanted(rules: list[tuple[re.Pattern, bool, bool]], path: str, is_dir: bool, only_included: bool) -> bool:
    for regex, dir_only, include in rules:
        if (is_dir or not dir_only) and regex.fullmatch(path):
            return include
    return is_dir or not only_included


# --- the listing ----------------------------------------------------------------------------------

def attr_problem(size, mtime) -> str | None:
    """Why the numbers the instance gave for a file cannot be believed, or None."""
    for value, what in ((size, "size"), (mtime, "mtime")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not math.isfinite(value)) or not 0 <= value < LARGEST:
            return f"the instance gave it an impossible {what} ({value!r})"
    return None


def list_source(files, root: str, rules, only_included: bool) -> tuple[list[Listing], dict, list[str]]:
    """The tree under `root`: entries as transfer_pull checks them, {name: (mode, mtime)}, warnings."""
    entries, facts, warnings, stack = [], {}, [], [""]
    while stack:
        rel = stack.pop()
        try:
            listing = files.listdir_attr(f"{root}/{rel}" if rel else root)
        except UnicodeDecodeError:
            warnings.append(f"not pulled: {rel or '.'!r}: a name in it is not UTF-8")
            continue
        except FileNotFoundError:
            if not rel:
                raise
            continue  # a directory that went away meanwhile
        for attrs in listing:
            name = f"{rel}/{attrs.filename}" if rel else attrs.filename
            kind = _KIND.get(stat.S_IFMT(attrs.st_mode or 0), "?")
            if kind == "d":
                if wanted(rules, name, True, only_included) and check_name(attrs.filename) is None:
                    stack.append(name)
                entries.append(Listing("d", 0, name))
                continue
            if not wanted(rules, name, False, only_included):
                continue
            problem = attr_problem(attrs.st_size, attrs.st_mtime) if kind == "-" else None
            if problem:
                warnings.append(f"not pulled: {name!r}: {problem}")
                continue
            link = _readlink(files, f"{root}/{name}") if kind == "l" else ""
            entries.append(Listing(kind if kind != "?" else "s", attrs.st_size or 0, name, link))
            facts[name] = (attrs.st_mode, attrs.st_mtime or 0)
    return entries, facts, warnings


def _readlink(files, path: str) -> str:
    try:
        return files.readlink(path) or ""
    except OSError:
        return "?"


# --- pull -------------------------------------------------------------------------------------------

def pull(remote: Remote, source: str, destination: Path, *, include: Sequence[str] = (),
         exclude: Sequence[str] = (), on_plan: Callable[[PullPlan], None] | None = None,
         on_progress: Progress | None = None) -> PullReport:
    """The files under `source` on the instance into `destination` (the contract of transfer_pull.pull)."""
    destination = Path(os.path.abspath(destination))
    rules = [rule(p, False) for p in exclude] + [rule(p, True) for p in include]
    root = sftp_path(source).rstrip("/") or "/"
    with open_files(remote) as files:
        try:
            entries, facts, warnings = list_source(files, root, rules, bool(include))
        except FileNotFoundError:
            raise NotFoundError(f"{source} does not exist on {remote.name}",
                                hint="the job has written no output yet, or the path is wrong (`awsrun ssh -- ls`)") from None
        except session_errors(remote) as exc:
            raise RemoteError(f"cannot read {source} on {remote.name}: {str(exc) or type(exc).__name__}") from None
        plan = pull_plan(entries, destination, warnings)
        if on_plan is not None:
            on_plan(plan)
        fetch = [entry for entry in plan.fetch if not _have(destination / entry.name, entry.size, facts[entry.name][1])]
        unchanged = len(plan.fetch) - len(fetch)
        if not fetch:
            return PullReport(0, 0, 0, unchanged, destination, plan.warnings)
        warnings = list(plan.warnings)
        meter = Meter(sum(entry.size for entry in fetch), on_progress)
        destination.mkdir(parents=True, exist_ok=True)
        root_fd = os.open(destination, os.O_RDONLY | os.O_DIRECTORY)
        pulled = raw = 0
        try:
            for batch in batches(fetch):
                for entry, opener in zip(batch, openers(files, root, batch)):
                    mode, mtime = facts[entry.name]
                    problem = fetch_below(root_fd, entry, opener, mode, mtime, meter)
                    if problem:
                        warnings.append(f"not pulled: {entry.shown!r}: {problem}")
                        continue
                    pulled, raw = pulled + 1, raw + entry.size
        except session_errors(remote) as exc:
            raise RemoteError(f"the connection to {remote.name} broke while pulling {source}: "
                              f"{str(exc) or type(exc).__name__}", hint="run the command again: it resumes "
                                                                        "where it stopped") from None
        finally:
            os.close(root_fd)
    meter.finish()
    return PullReport(pulled, raw, meter.done, unchanged, destination, tuple(warnings))


def batches(fetch: list[Listing]) -> Iterator[list[Listing]]:
    """Small files together (fetched in a few round trips: awsrun.remote.ssh.get_small_files), big ones
    alone (streamed)."""
    batch, size = [], 0
    for entry in fetch:
        if entry.size > SMALL:
            yield [entry]
            continue
        if batch and (len(batch) == BATCH_FILES or size + entry.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.size
    if batch:
        yield batch


def openers(files, root: str, batch: list[Listing]) -> list[Callable]:
    """For each file of the batch, what opens its bytes: the remote file itself for a big one alone, an
    in-memory copy of a small one (an error fetching it is raised when opened)."""
    if len(batch) == 1 and batch[0].size > SMALL:
        path = f"{root}/{batch[0].name}"
        return [lambda: files.open(path, "rb")]
    get = getattr(files, "get_small_files", None)
    if get is None:
        from awsrun.remote.ssh import get_small_files

        results = get_small_files(files, [(f"{root}/{entry.name}", entry.size) for entry in batch])
    else:
        results = get([(f"{root}/{entry.name}", entry.size) for entry in batch])
    return [lambda result=result: _opened(result) for result in results]


def _opened(result):
    if isinstance(result, Exception):
        raise result
    return io.BytesIO(result)


def _have(path: Path, size: int, mtime) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size and info.st_mtime_ns // NS == int(mtime)


def fetch_below(root_fd: int, entry: Listing, open_source, mode: int, mtime, meter: Meter) -> str | None:
    """One file to `entry.name` under the directory `root_fd`, every directory on the way opened with
    O_NOFOLLOW (a symlink already there is never followed), at most `entry.size` bytes."""
    parts, fds, here = entry.name.split("/"), [], root_fd
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o755, dir_fd=here)
            except FileExistsError:
                pass
            try:
                here = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=here)
            except OSError:
                return f"{part!r} on the way is a symlink or a file locally"
            fds.append(here)
        name = parts[-1]
        try:
            if stat.S_ISDIR(os.stat(name, dir_fd=here, follow_symlinks=False).st_mode):
                return "a local directory of that name is in the way"
        except FileNotFoundError:
            pass
        try:
            source = open_source()
        except FileNotFoundError:
            return "it went away on the instance during the pull"
        except FileChanged:
            return "it changed size on the instance during the pull"
        temp = f"{TEMP_PREFIX}{os.getpid()}"
        with source:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=here)
            try:
                with os.fdopen(fd, "wb") as out:
                    _copy_exactly(source, out, entry.size, meter)
                    out.flush()  # before the mtime is set: a later write would move it
                    os.fchmod(out.fileno(), mode & 0o755)
                    os.utime(out.fileno(), ns=(int(mtime) * NS, int(mtime) * NS))
                os.replace(temp, name, src_dir_fd=here, dst_dir_fd=here)
            except BaseException as exc:
                try:
                    os.unlink(temp, dir_fd=here)
                except OSError:
                    pass
                if isinstance(exc, FileChanged):
                    return "it changed size on the instance during the pull"
                raise
        return None
    finally:
        for fd in fds:
            os.close(fd)


def _copy_exactly(source, out, size: int, meter: Meter) -> None:
    for block in blocks(source, size):
        out.write(block)
        meter.add(len(block))
