"""Files between the project and an instance with rsync, over the command's own SSH connection (the kept
OpenSSH master when there is one: rsync's ssh is the same argv awsrun runs, ControlPath included).

rsync streams (bounded memory on both sides whatever the size), sends only the changed blocks of a file
that grew or changed a little (its rolling checksum), writes each file under a temporary name and renames
it, and keeps an interrupted file in PARTIAL_DIR so that the next run resumes it instead of starting over.

Push (`submit`): the project's ignore tiers become rsync filter rules in the order the walker decides
(awsrun.remote.walker: highest tier first, the last rule of a tier first), so both sides agree on what is
the project's: what is ignored is neither sent nor deleted on the instance (`runs/`, caches), everything
else the project no longer has is deleted. Symlinks that lead out of the project are never sent.

Pull: nothing from the instance is trusted. One listing first (names, kinds, sizes), checked here: only
regular files with plain names below the destination are asked for, by name (`--files-from`; rsync's
receiver refuses any name it did not ask for), never through a symlink or a file already in the
destination, never as links, devices or fifos; a file that arrives bigger than the bytes that came over
the wire allow is removed.

Where rsync is missing on either side, RsyncMissing: the caller uses awsrun's own transfer (awsrun.sync).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from awsrun.errors import NotFoundError, RemoteError
from awsrun.remote.base import Remote
from awsrun.sync import LocalTree, PullReport, SyncReport, check_name

RSYNC = "rsync"  # the local program (a test names one that is not installed to take the fallback)
REMOTE_RSYNC = "rsync"  # the instance's
PARTIAL_DIR = ".awsrun-partial"
BUSY_MARK = "awsrun-busy"
NAME_MAX = 255
# rsync's own exit codes (rsync(1), EXIT VALUES)
PARTIAL, VANISHED = 23, 24
_MISSING = ("command not found", "No such file or directory", "not found")
_PROGRESS = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)\s+(\d+:\d\d:\d\d)")

# (bytes so far, percent, rate text, eta text): what progress2 says, for a progress display
Progress = Callable[[int, int, str, str], None]


class RsyncMissing(Exception):
    """rsync is not installed here or on the instance: use awsrun's own transfer."""


@dataclass(frozen=True)
class Shell:
    """How rsync reaches the instance: the ssh argv (without the destination) and its user@host, or
    None for this machine (the local provider)."""

    ssh: list[str] | None
    destination: str | None
    cwd: Path | None

    def location(self, path: str) -> str:
        if self.destination is None:
            return os.path.expanduser(path)
        # the remote rsync starts in the login's home: `~/x` is `x`
        path = path[2:] if path.startswith("~/") else ("." if path == "~" else path)
        return f"{self.destination}:{path}"

    def options(self, rsync_path: str | None = None) -> list[str]:
        if self.ssh is None:
            return []
        words = ["-e", shlex.join(self.ssh)]
        return words + ([f"--rsync-path={rsync_path}"] if rsync_path else [])


def shell_of(remote: Remote) -> Shell:
    """rsync's way to `remote`: the same ssh argv awsrun's own commands use there."""
    if shutil.which(RSYNC) is None:
        raise RsyncMissing("rsync is not installed here")
    if getattr(remote, "target", None) is None:
        return Shell(None, None, None)  # LocalRemote
    if hasattr(remote, "control"):  # OpenSshRemote: over its kept master
        argv, cwd = remote.argv("true")
        return Shell(argv[:-2], argv[-2], cwd)
    argv = remote.interactive_argv(None)  # paramiko's SshRemote: the system ssh with the same options
    return Shell([word for word in argv[:-1] if word != "-t"], argv[-1], None)


# --- running rsync ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    code: int
    lines: list[str]       # stdout lines that are not progress
    errors: list[str]      # stderr lines


def run_rsync(argv: list[str], shell: Shell, stdin: bytes = b"", on_progress: Progress | None = None) -> Run:
    """rsync with `stdin` fed, its output read as it comes (progress lines end with \\r)."""
    process = subprocess.Popen(argv, cwd=shell.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    errors: list[str] = []

    def feed() -> None:
        try:
            process.stdin.write(stdin)
        except OSError:
            pass
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass

    helpers = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=lambda: errors.extend(
                   line.decode(errors="replace").rstrip("\n") for line in process.stderr), daemon=True)]
    for helper in helpers:
        helper.start()
    lines: list[str] = []
    pending = b""
    try:
        while True:
            chunk = process.stdout.read1(65536)
            if not chunk:
                break
            pending += chunk
            *parts, pending = re.split(rb"[\r\n]", pending)
            for part in parts:
                _take(part.decode(errors="replace"), lines, on_progress)
        if pending:
            _take(pending.decode(errors="replace"), lines, on_progress)
        code = process.wait()
    finally:
        if process.poll() is None:  # Ctrl-C: rsync got the signal too; let it park its partial file
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for helper in helpers:
        helper.join(timeout=5)
    return Run(code, lines, errors)


def _take(line: str, lines: list[str], on_progress: Progress | None) -> None:
    match = _PROGRESS.match(line)
    if match:
        if on_progress is not None:
            on_progress(int(match.group(1).replace(",", "")), int(match.group(2)), match.group(3), match.group(4))
    elif line.strip():
        lines.append(line)


def _check_missing(run: Run, shell: Shell) -> None:
    text = "\n".join(run.errors)
    if run.code in (12, 14, 127) and shell.ssh is not None and "rsync" in text and any(m in text for m in _MISSING):
        raise RsyncMissing("rsync is not installed on the instance")


def _fail(run: Run, what: str, remote: Remote, where: str | None = None, needed: int = 0) -> None:
    """A failed rsync as awsrun's errors: ssh's own failure (exit 255) named as every command names it; a
    full disk on the instance (`where`) named with its size and what is left (the receiver's own message
    is lost when the sender ends first: a file error where fewer than `needed` bytes are free says it)."""
    text = "\n".join(run.errors + run.lines)
    full = "No space left on device" in text or "Disk quota exceeded" in text
    disk = describe_disk(remote, where) if where and (full or run.code == 11) else None
    if disk and not full:
        full = disk[1] < needed
    if full:
        disk = disk[0] if disk else None
        raise RemoteError(f"no space left on {disk or 'the disk'} while trying to {what}",
                          hint="free space there (`awsrun ssh -- df -h`), or leave big files out with .awsrunignore")
    raise_for = getattr(remote, "_raise_for", None)
    if raise_for is not None:
        raise_for(text)
    if run.code in (10, 12, 30, 35, 255):
        raise RemoteError(f"the connection to {remote.name} broke while trying to {what}: {_first(run.errors)}",
                          hint="run the command again: it resumes where it stopped")
    raise RemoteError(f"cannot {what} (rsync exit {run.code}): {_first(run.errors)}")


def describe_disk(remote: Remote, path: str) -> tuple[str, int] | None:
    """(`the instance's disk DEVICE mounted on MOUNT, which holds PATH: FREE free of SIZE`, free bytes)."""
    from awsrun.tmux import remote_path

    try:
        result = remote.run(f"df -P -k {remote_path(path)} | tail -n 1", timeout=30)
        device, blocks, _, available, _, mount = result.stdout.split(None, 5)
        size, free = int(blocks) * 1024, int(available) * 1024
    except (RemoteError, ValueError):
        return None

    def amount(n: int) -> str:
        return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.1f} GB"

    return (f"the instance's disk {device} mounted on {mount.strip()}, which holds {path}: "
            f"{amount(free)} free of {amount(size)}", free)


def _first(errors: list[str]) -> str:
    useful = [line for line in errors if line.strip() and not line.startswith("rsync error:")]
    return (useful or errors or ["no output"])[0].strip()


def _stats(lines: list[str]) -> dict[str, int]:
    out = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        number = re.match(r"[\d,]+", value.strip())
        if sep and number:
            out[key.strip()] = int(number.group(0).replace(",", ""))
    return out


# --- push ----------------------------------------------------------------------------------------

def escape(path: str) -> str:
    """A literal path as an rsync pattern (wildcards are literal in a pattern without any)."""
    return re.sub(r"([*?\[\\])", r"\\\1", path) if re.search(r"[*?\[]", path) else path


def rsync_glob(glob: str) -> str:
    """A gitignore glob as rsync reads it: rsync takes `\\` as an escape only in a pattern with a wildcard."""
    if re.search(r"[*?\[]", glob):
        return glob
    return re.sub(r"\\(.)", r"\1", glob)


def filter_rules(tree: LocalTree) -> list[str]:
    """The walker's decision as rsync filter rules, first match wins: the symlinks that leave the project
    (excluded by name), then the tiers, highest first, each tier's last rule first."""
    rules = [f"- /{escape(path)}" for path in tree.dropped]
    rules += [f"- /{escape(path)}" for path in absolute_links(tree)]
    for tier in tree.patterns:
        for base, glob, negate, dir_only, basename_only in reversed(tier):
            glob = rsync_glob(glob)
            sign, slash = ("+" if negate else "-"), ("/" if dir_only else "")
            prefix = "/" + escape(base) + "/" if base else "/"
            if basename_only and not base:
                patterns = [glob]
            elif basename_only:
                patterns = [prefix + glob, prefix + "**/" + glob]
            else:
                patterns = [prefix + glob]
            # gitignore's `**/` matches no directory too; rsync's needs one
            patterns += [p.replace("/**/", "/", 1) for p in patterns if "/**/" in p]
            rules += [f"{sign} {pattern}{slash}" for pattern in dict.fromkeys(patterns)]
    return rules


def absolute_links(tree: LocalTree) -> list[str]:
    """Symlinks inside the project written with an absolute target: the instance gets them relative."""
    out = []
    for rel, entry in tree.entries.items():
        if entry[0] == "l":
            try:
                if os.path.isabs(os.readlink(tree.root / rel)):
                    out.append(rel)
            except OSError:
                pass
    return out


def link_steps(tree: LocalTree, remote_root: str) -> str | None:
    """Shell steps that make the absolute-target links (relative) on the instance, or None."""
    from awsrun.tmux import remote_path

    steps = [f"ln -sfn {shlex.quote(tree.entries[rel][1])} {remote_path(remote_root + '/' + rel)}"
             for rel in absolute_links(tree)]
    return " && ".join(steps) or None


def push(remote: Remote, tree: LocalTree, remote_root: str, *, busy: str | None = None,
         on_progress: Progress | None = None) -> SyncReport:
    """Make `remote_root` hold the project's files. `busy`: a shell test run first on the instance; when
    it succeeds nothing is written and JobBusy is raised."""
    from awsrun.tmux import remote_path

    shell = shell_of(remote)
    if shell.ssh is None:
        if busy is not None and remote.run(busy).ok:
            raise JobBusy()
        Path(os.path.expanduser(remote_root)).mkdir(parents=True, exist_ok=True)
        rsync_path = None
    else:
        check = f"if {busy}; then echo {BUSY_MARK} >&2; exit 99; fi; " if busy else ""
        rsync_path = f"{check}mkdir -p {remote_path(remote_root)} && {shlex.quote(REMOTE_RSYNC)}"
    argv = [RSYNC, "-rlpt", "--delete", "--no-devices", "--no-specials", f"--partial-dir={PARTIAL_DIR}",
            "--stats", "--out-format=%i %n", "--info=progress2" if on_progress else "--info=none,stats2",
            "--from0", "--filter=. -", *shell.options(rsync_path),
            str(tree.root) + "/", shell.location(remote_root) + "/"]
    rules = b"".join(rule.encode("utf-8", "surrogateescape") + b"\0" for rule in filter_rules(tree))
    run = run_rsync(argv, shell, rules, on_progress)
    if any(BUSY_MARK in line for line in run.errors):
        raise JobBusy()
    _check_missing(run, shell)
    warnings = list(tree.warnings)
    if run.code == VANISHED:
        warnings += [f"not synced: {line.split(': ', 1)[-1]} (it went away while sending)"
                     for line in run.errors if "vanished" in line]
    elif run.code != 0:
        needed = sum(entry[1] for entry in tree.entries.values() if entry[0] == "f")
        _fail(run, f"write the project into {remote_root} on {remote.name}", remote, remote_root, needed)
    items = [line for line in run.lines if re.match(r"^[<>ch.*][fdLDS+.]", line)]
    sent = sum(1 for line in items if line[:2] in (">f", "cL", "<f"))
    deleted = sum(1 for line in items if line.startswith("*deleting") and not line.endswith("/"))
    stats = _stats(run.lines)
    files = sum(1 for entry in tree.entries.values())
    return SyncReport(sent, stats.get("Total bytes sent", 0), stats.get("Total transferred file size", 0), deleted,
                      max(0, files - sent), remote_root, tuple(warnings))


class JobBusy(Exception):
    """The push's busy test said yes on the instance: nothing was written."""


# --- pull ----------------------------------------------------------------------------------------

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
    filters = [f"--exclude={p}" for p in exclude] + [f"--include={p}" for p in include]
    if include:
        filters += ["--include=*/", "--exclude=*", "--prune-empty-dirs"]
    listed = run_rsync([RSYNC, "-rl", "--list-only", "-8", *filters, *shell.options(shlex.quote(REMOTE_RSYNC)),
                        shell.location(source) + "/"], shell)
    _check_missing(listed, shell)
    if listed.code != 0:
        if any("No such file or directory" in line and ("change_dir" in line or "link_stat" in line)
               for line in listed.errors):
            raise NotFoundError(f"{source} does not exist on {remote.name}",
                                hint="the job has written no output yet, or the path is wrong (`awsrun ssh -- ls`)")
        if listed.code != VANISHED:
            _fail(listed, f"read {source} on {remote.name}", remote)
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
    argv = [RSYNC, "-rt", "--no-links", "--no-devices", "--no-specials", "--chmod=go-w,ugo-s",
            f"--partial-dir={PARTIAL_DIR}", "--files-from=-", "--from0", "--stats", "--out-format=%i %n",
            "--info=progress2" if on_progress else "--info=none,stats2", *shell.options(shlex.quote(REMOTE_RSYNC)),
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
        _fail(run, f"pull {source} from {remote.name}", remote)
    stats = _stats(run.lines)
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

