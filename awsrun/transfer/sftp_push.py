"""Push where rsync is missing here or on the instance: files stream over SFTP (paramiko's client, on the
system ssh's pipes over the kept master, or on paramiko's own connection; on this machine for the local
provider, plain copies through the same calls), in bounded memory whatever their size.

The target's tree is read in ONE command (awsrun.transfer.walker with the project's ignore tiers, which
also answers the busy test and clears stale temporary files): one round trip, where walking it over SFTP
costs one per directory. Only new or changed files travel (size, mtime to the second: SFTP carries
whole seconds, as rsync's quick check compares, and mode); what the project no longer has is deleted,
never what is ignored there (`runs/`, caches). Each file is written under a temporary name, given its
mode and mtime, then renamed into place: a killed transfer leaves old files or new files, never half
files, and the next push sends what is missing. A directory in the way of a file is reported, not removed.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from awsrun.errors import AwsrunError, RemoteError
from awsrun.remote.base import Remote
from awsrun.transfer import scan as sync
from awsrun.transfer.ignore import compile_tiers
from awsrun.transfer.rsync import JobBusy, Progress, describe_disk
from awsrun.transfer.sftp_session import (
    CHUNK,
    NS,
    Meter,
    open_files,
    session_errors,
    sftp_path,
    tune,
)

PYTHON = "python3"  # runs the walker on an instance (the local provider's tree is walked in this process)
SMALL = 256 * 1024  # files up to this size go in batches: a few round trips for many files, not five each
BATCH_FILES, BATCH_BYTES = 64, 8 << 20  # what a batch holds in memory at most
STALE_S = 600  # a temporary file this old belongs to a dead transfer


def target_manifest(remote: Remote, tree: sync.LocalTree, remote_root: str, busy: str | None) -> dict[str, list]:
    """What the target holds under `remote_root` (the walker's entries), after the busy test."""
    if getattr(remote, "target", None) is None:  # this machine
        if busy is not None and remote.run(busy).ok:
            raise JobBusy()
        root = os.path.expanduser(remote_root)
        return sync.walk_tree(root, compile_tiers(tree.tiers), stale_after=STALE_S) if os.path.isdir(root) else {}
    check = f"if {busy}; then echo running; exit 0; fi; " if busy else ""
    listed = remote.run(f"{check}echo free; {sync.manifest_command(remote_root, PYTHON)}",
                        stdin=sync.manifest_input(tree))
    state, _, manifest = listed.stdout.partition("\n")
    if state.strip() == "running":
        raise JobBusy()
    if listed.exit_code == 127 and PYTHON in listed.stderr:
        raise RemoteError(f"{PYTHON} is not installed on {remote.name}: awsrun's transfer without rsync needs it",
                          hint="install rsync or python3 there (`awsrun bootstrap` installs both)")
    listed.check(f"read the file list of {remote_root} on {remote.name}")
    there = sync.parse_manifest(manifest, remote.name)
    if not all(_entry_ok(name, entry) for name, entry in there.items()):
        raise RemoteError(f"the file list from {remote.name} is unreadable: it lists something that is no file entry")
    return there


def _entry_ok(name: str, entry) -> bool:
    parts = name.split("/")  # a project's names may hold any byte but NUL: only a way out is refused
    if "\0" in name or any(part in ("", ".", "..") for part in parts) or not isinstance(entry, list) or not entry:
        return False
    if entry[0] == "l":
        return len(entry) == 2 and isinstance(entry[1], str)
    return entry[0] == "f" and len(entry) == 4 and all(type(value) is int for value in entry[1:])


def same(local: list, there: list | None) -> bool:
    if there is None or local[0] != there[0] or local[0] == "l":
        return local == there
    return local[1] == there[1] and local[2] // NS == there[2] // NS and local[3] == there[3]


def plan(local: dict[str, list], there: dict[str, list]) -> tuple[list[str], list[str], int]:
    """(to send, to delete, unchanged count)."""
    send = sorted(path for path, entry in local.items() if not same(entry, there.get(path)))
    delete = sorted(path for path in there if path not in local)
    return send, delete, len(local) - len(send)


def push(remote: Remote, tree: sync.LocalTree, remote_root: str, *, busy: str | None = None,
         on_progress: Progress | None = None) -> sync.SyncReport:
    """Make `remote_root` hold the project's files (the contract of awsrun.transfer.rsync.push)."""
    there = target_manifest(remote, tree, remote_root, busy)
    send, delete, unchanged = plan(tree.entries, there)
    if not send and not delete:
        return sync.SyncReport(0, 0, 0, 0, unchanged, remote_root, tuple(tree.warnings))
    meter = Meter(sum(tree.entries[rel][1] for rel in send if tree.entries[rel][0] == "f"), on_progress)
    warnings = list(tree.warnings)
    with open_files(remote) as files:
        writer = Writer(files, sftp_path(remote_root), there)
        try:
            writer.make_root()
            for rel in delete:
                writer.delete(rel)
            small = [rel for rel in send if tree.entries[rel][0] == "f" and tree.entries[rel][1] <= SMALL]
            for batch in batches(small, tree):
                warnings += writer.put_small(tree, batch, meter)
            for rel in send:
                if tree.entries[rel][0] != "f" or tree.entries[rel][1] > SMALL:
                    problem = writer.put(tree, rel, meter)
                    if problem:
                        warnings.append(f"skipped {rel!r}: {problem}")
        except session_errors(remote) as exc:
            _fail(remote, remote_root, exc, meter.total - meter.done)
    meter.finish()
    return sync.SyncReport(writer.sent, meter.done, meter.done, len(delete), unchanged, remote_root, tuple(warnings))


def batches(rels: list[str], tree: sync.LocalTree) -> Iterator[list[str]]:
    batch, size = [], 0
    for rel in rels:
        if batch and (len(batch) == BATCH_FILES or size + tree.entries[rel][1] > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(rel)
        size += tree.entries[rel][1]
    if batch:
        yield batch


@dataclass(frozen=True)
class SmallFile:
    temp: str
    target: str
    data: bytes
    mode: int
    seconds: int


def _fail(remote: Remote, remote_root: str, exc: BaseException, needed: int) -> None:
    disk = describe_disk(remote, remote_root) if getattr(remote, "target", None) is not None else None
    if (disk and disk[1] < needed) or getattr(exc, "errno", None) in (28, 122):
        raise RemoteError(f"no space left on {disk[0] if disk else 'the disk'} while trying to write the project "
                          f"into {remote_root}", hint="free space there (`awsrun ssh -- df -h`), or leave big files "
                                                      "out with .awsrunignore") from None
    detail = str(exc).strip() or type(exc).__name__
    raise RemoteError(f"cannot write the project into {remote_root} on {remote.name}: {detail}",
                      hint="run the command again: files already sent are not sent again") from None


def _open_local(path: Path, rel: str):
    try:
        return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
    except OSError as exc:
        raise AwsrunError(f"cannot read {rel!r} of the project: {exc.strerror}", hint="run the command again") from None


class Writer:
    """Writes into `root` over one session: directories made on the way, files whole or not at all."""

    def __init__(self, files, root: str, there: dict[str, list]):
        self.files, self.root, self.sent, self.count = files, root.rstrip("/") or "/", 0, 0
        # every directory on the way to a listed entry is a real one (the walker follows no symlink)
        self.dirs = {self._path(rel.rsplit("/", 1)[0]) for rel in there if "/" in rel}

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root != "/" else f"/{rel}"

    def make_root(self) -> None:
        try:
            if stat.S_ISDIR(self.files.stat(self.root).st_mode):
                self.dirs.add(self.root)
                return
        except FileNotFoundError:
            pass
        parts = self.root.split("/")
        for end in range(1, len(parts) + 1):
            path = "/".join(parts[:end])
            if path in ("", ".") or path in self.dirs:
                continue
            try:
                self.files.mkdir(path, 0o755)
            except OSError:
                if not stat.S_ISDIR(self.files.stat(path).st_mode):  # the project's own root may be a symlink
                    raise
        self.dirs.add(self.root)

    def directory(self, parts: list[str]) -> str | None:
        """The directory `parts` below the root, made where missing; None when something on the way is
        not a directory (a symlink included)."""
        path = self.root
        for part in parts:
            path = self._path(part) if path == self.root else f"{path}/{part}"
            if path in self.dirs:
                continue
            try:
                self.files.mkdir(path, 0o755)
            except OSError:
                try:
                    if not stat.S_ISDIR(self.files.lstat(path).st_mode):
                        return None
                except OSError:
                    return None
            self.dirs.add(path)
        return path

    def delete(self, rel: str) -> None:
        """Unlink one file or link (the manifest lists no directory), then the directories it emptied."""
        try:
            self.files.remove(self._path(rel))
        except FileNotFoundError:
            pass
        parts = rel.split("/")[:-1]
        while parts:
            path = self._path("/".join(parts))
            try:
                self.files.rmdir(path)
            except OSError:
                break
            self.dirs.discard(path)
            parts.pop()

    def put(self, tree: sync.LocalTree, rel: str, meter: Meter) -> str | None:
        entry, parts = tree.entries[rel], rel.split("/")
        parent = self.directory(parts[:-1])
        if parent is None:
            return "something on its way on the instance is not a directory"
        self.count += 1
        temp, target = f"{parent}/{sync.TEMP_PREFIX}{os.getpid()}-{self.count}", f"{parent}/{parts[-1]}"
        try:
            if entry[0] == "l":
                self.files.symlink(entry[1], temp)
            else:
                self._copy(tree.root / rel, rel, temp, entry, meter)
            self.files.posix_rename(temp, target)
        except BaseException as exc:
            self._discard(temp)
            if isinstance(exc, OSError) and self._is_directory(target):
                return "a directory of that name is in the way on the instance"
            raise
        self.sent += 1
        return None

    def put_small(self, tree: sync.LocalTree, rels: list[str], meter: Meter) -> list[str]:
        """Small files in one batch (awsrun.remote.ssh.put_small_files) -> warnings."""
        items, names, warnings = [], [], []
        for rel in rels:
            entry, parts = tree.entries[rel], rel.split("/")
            parent = self.directory(parts[:-1])
            if parent is None:
                warnings.append(f"skipped {rel!r}: something on its way on the instance is not a directory")
                continue
            with _open_local(tree.root / rel, rel) as source:
                data = source.read(SMALL + 1)
            self.count += 1
            seconds = entry[2] // NS if len(data) == entry[1] else 0  # changed while read: sent again next time
            items.append(SmallFile(f"{parent}/{sync.TEMP_PREFIX}{os.getpid()}-{self.count}", f"{parent}/{parts[-1]}",
                                   data, entry[3] & 0o777, seconds))
            names.append(rel)
        put = getattr(self.files, "put_small_files", None)
        if put is None:
            from awsrun.remote.ssh import put_small_files

            errors = put_small_files(self.files, items)
        else:
            errors = put(items)
        for rel, item, error in zip(names, items, errors):
            if error is None:
                self.sent += 1
                meter.add(len(item.data))
                continue
            self._discard(item.temp)
            if not (isinstance(error, OSError) and self._is_directory(item.target)):
                raise error
            warnings.append(f"skipped {rel!r}: a directory of that name is in the way on the instance")
        return warnings

    def _copy(self, path: Path, rel: str, temp: str, entry: list, meter: Meter) -> None:
        copied = 0
        with _open_local(path, rel) as source, self.files.open(temp, "wb") as handle:
            tune(handle)
            while block := source.read(CHUNK):
                handle.write(block)
                copied += len(block)
                meter.add(len(block))
        self.files.chmod(temp, entry[3] & 0o777)
        # a file that changed while read gets mtime 0: the next push compares unequal and sends it again
        seconds = entry[2] // NS if copied == entry[1] else 0
        self.files.utime(temp, (seconds, seconds))

    def _is_directory(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(self.files.lstat(path).st_mode)
        except Exception:  # noqa: BLE001 (the first error is the one to raise)
            return False

    def _discard(self, temp: str) -> None:
        try:
            self.files.remove(temp)
        except Exception:  # noqa: BLE001 (best effort: the walker never lists it and clears it when stale)
            pass
