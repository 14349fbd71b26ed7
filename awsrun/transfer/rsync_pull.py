"""`pull` with rsync (awsrun.transfer.rsync runs it): nothing from the instance is trusted. One listing first
(names, kinds, sizes), checked here: only regular files with plain names below the destination are asked
for, by name (`--files-from`; rsync's receiver refuses any name it did not ask for), never through a
symlink or a file already in the destination, never as links, devices or fifos; a file that arrives bigger
than the bytes that came over the wire allow is removed.
"""
from __future__ import annotations

import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from awsrun.errors import NotFoundError
from awsrun.remote.base import Remote
from awsrun.transfer import rsync
from awsrun.transfer.rsync import (
    PARTIAL,
    PARTIAL_DIR,
    VANISHED,
    Progress,
    run_rsync,
    shell_of,
)
from awsrun.transfer.scan import PullReport, check_name

NAME_MAX = 255


@dataclass(frozen=True)
class Listing:
    kind: str        # the first letter of rsync's mode string: - d l p c b s
    size: int
    name: str        # as rsync prints it (a non-printable byte as \#ooo)
    link: str = ""   # a symlink's target

    @property
    def shown(self) -> str:
        """The name with rsync's escapes undone, for a warning (which quotes it with repr)."""
        return re.sub(r"\\#([0-7]{3})", lambda m: chr(int(m.group(1), 8)), self.name)


def parse_listing(lines: Sequence[str]) -> tuple[list[Listing], list[str]]:
    """rsync --list-only's lines -> entries, and warnings for the lines that are not one."""
    entries, warnings = [], []
    for line in lines:
        match = re.match(r"^([-dlpcbs])[-rwxsStT]{9}\s+([\d,]+)\s+\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (.+)$", line)
        if not match:
            if not line.startswith(("receiving", "total size", "sent ", "Number of", "Total", "Literal",
                                    "Matched", "File list")):
                warnings.append(f"not pulled: the instance listed {line[:200]!r}, which is not a file entry")
            continue
        kind, name, link = match.group(1), match.group(3), ""
        if kind == "l" and " -> " in name:
            name, link = name.split(" -> ", 1)
        entries.append(Listing(kind, int(match.group(2).replace(",", "")), name, link))
    return entries, warnings


_KINDS = {"l": "symlink", "p": "fifo", "c": "device file", "b": "device file", "s": "socket"}


def refusal(entry: Listing, destination: Path) -> str | None:
    """Why `entry` is not fetched into `destination`, or None."""
    name = entry.name
    if entry.kind in _KINDS:
        link = f" -> {Listing('-', 0, entry.link).shown!r}" if entry.kind == "l" else ""
        return f"it is a {_KINDS[entry.kind]}{link}; pull copies regular files only"
    if "\\#" in name:
        return "its name holds a control character (newline, tab, ...)"
    reason = check_name(name)
    if reason:
        return reason
    parts = name.split("/")
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in parts):
        return f"a part of its name is longer than {NAME_MAX} bytes"
    if entry.kind == "d":
        return None
    here = destination
    for part in parts[:-1]:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            break
        if not stat.S_ISDIR(mode):
            return f"{part!r} on the way is a symlink or a file locally"
    try:
        if stat.S_ISDIR(os.lstat(destination / name).st_mode):
            return "a local directory of that name is in the way"
    except FileNotFoundError:
        pass
    return None


@dataclass(frozen=True)
class PullPlan:
    fetch: list[Listing]
    unchanged: int
    bytes_to_fetch: int      # at most: files that differ from the local copy by size or second
    warnings: tuple[str, ...]


def pull_plan(entries: list[Listing], destination: Path, warnings: list[str]) -> PullPlan:
    fetch, unchanged, total = [], 0, 0
    warnings = list(warnings)
    for entry in entries:
        if entry.name == ".":
            continue
        reason = refusal(entry, destination)
        if reason:
            warnings.append(f"not pulled: {entry.shown!r}: {reason}")
            continue
        if entry.kind != "-":
            continue
        fetch.append(entry)
        try:
            if os.lstat(destination / entry.name).st_size == entry.size:
                unchanged += 1  # by size; rsync's quick check (size and mtime) decides
                continue
        except OSError:
            pass
        total += entry.size
    return PullPlan(fetch, unchanged, total, tuple(warnings))


def pull(remote: Remote, source: str, destination: Path, *, include: Sequence[str] = (),
         exclude: Sequence[str] = (), on_plan: Callable[[PullPlan], None] | None = None,
         on_progress: Progress | None = None) -> PullReport:
    shell = shell_of(remote)
    destination = Path(os.path.abspath(destination))  # rsync may run elsewhere (a long socket path's directory)
    filters = [f"--exclude={p}" for p in exclude] + [f"--include={p}" for p in include]
    if include:
        filters += ["--include=*/", "--exclude=*", "--prune-empty-dirs"]
    remote_rsync = shell.options(shlex.quote(rsync.REMOTE_RSYNC))
    listed = run_rsync([rsync.RSYNC, "-rl", "--list-only", "-8", *filters, *remote_rsync,
                        shell.location(source) + "/"], shell)
    rsync.check_missing(listed, shell)
    if listed.code != 0:
        if any("No such file or directory" in line and ("change_dir" in line or "link_stat" in line)
               for line in listed.errors):
            raise NotFoundError(f"{source} does not exist on {remote.name}",
                                hint="the job has written no output yet, or the path is wrong (`awsrun ssh -- ls`)")
        if listed.code != VANISHED:
            rsync.fail_for(listed, f"read {source} on {remote.name}", remote)
    entries, warnings = parse_listing(listed.lines)
    plan = pull_plan(entries, destination, warnings)
    if on_plan is not None:
        on_plan(plan)
    if not plan.fetch:
        return PullReport(0, 0, 0, plan.unchanged, destination, plan.warnings)
    destination.mkdir(parents=True, exist_ok=True)
    # what rsync may build a file from: the file it replaces, or the part an interrupted pull left
    before = {entry.name: max(_size(destination / entry.name), _size(_partial(destination / entry.name)))
              for entry in plan.fetch}
    argv = [rsync.RSYNC, "-rt", "--no-links", "--no-devices", "--no-specials", "--chmod=go-w,ugo-s",
            f"--partial-dir={PARTIAL_DIR}", "--files-from=-", "--from0", "--stats", "--out-format=%i %n",
            "--info=progress2" if on_progress else "--info=none,stats2", *remote_rsync,
            shell.location(source) + "/", str(destination) + "/"]
    names = b"".join(entry.name.encode("utf-8", "surrogateescape") + b"\0" for entry in plan.fetch)
    run = run_rsync(argv, shell, names, on_progress)
    warnings = list(plan.warnings)
    if run.code in (PARTIAL, VANISHED):
        warnings += [f"not pulled: {_quoted(line)}: it went away or changed on the instance during the pull"
                     for line in run.errors if "vanished" in line or "failed verification" in line]
        warnings += [f"not pulled: {line.strip()}" for line in run.errors
                     if line.startswith("rsync:") and "vanished" not in line and "some files" not in line]
    elif run.code != 0:
        rsync.fail_for(run, f"pull {source} from {remote.name}", remote)
    stats = rsync.parse_stats(run.lines)
    # what came to the receiver: for a copy on this machine, rsync's own process is the sender
    received = stats.get("Total bytes received" if shell.ssh is not None else "Total bytes sent", 0)
    fetched = [line.split(" ", 1)[1] for line in run.lines if line.startswith(">f") and " " in line]
    for name in list(fetched):
        path = destination / name
        # rsync writes literal bytes or blocks of the file it replaces: never more than both together
        if _size(path) > before.get(name, 0) + received:
            path.unlink(missing_ok=True)
            warnings.append(f"not pulled: {name!r}: it came bigger than the bytes sent allow (removed)")
            fetched.remove(name)
    return PullReport(len(fetched), stats.get("Total transferred file size", 0), received,
                      len(plan.fetch) - len(fetched), destination, tuple(warnings))


def _partial(path: Path) -> Path:
    return path.parent / PARTIAL_DIR / path.name


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _quoted(line: str) -> str:
    match = re.search(r'"([^"]*)"', line)
    return repr(match.group(1)) if match else line.strip()

