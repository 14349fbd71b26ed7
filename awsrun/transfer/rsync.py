"""Files between the project and an instance with rsync, over the command's own SSH connection (the kept
OpenSSH master when there is one: rsync's ssh is the same argv awsrun runs, ControlPath included).

rsync streams (bounded memory on both sides whatever the size), sends only the changed blocks of a file
that grew or changed a little (its rolling checksum), writes each file under a temporary name and renames
it, and keeps an interrupted file in PARTIAL_DIR so that the next run resumes it instead of starting over.

Push (`submit`): the project's ignore tiers become rsync filter rules in the order the walker decides
(awsrun.transfer.walker: highest tier first, the last rule of a tier first), so both sides agree on what is
the project's: what is ignored is neither sent nor deleted on the instance (`runs/`, caches), everything
else the project no longer has is deleted. Symlinks that lead out of the project are never sent.

Pull: awsrun.transfer.rsync_pull (a listing checked here first, then the files asked for by name).

Where rsync is missing on either side, RsyncMissing: the caller moves the files over SFTP instead
(awsrun.transfer.sftp_push, awsrun.transfer.sftp_pull).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from awsrun.errors import RemoteError
from awsrun.remote.base import Remote, Result
from awsrun.remote.process import stop_process, stream_output
from awsrun.transfer.scan import LocalTree, SyncReport

RSYNC = "rsync"  # the local program (a test names one that is not installed to take the fallback)
REMOTE_RSYNC = "rsync"  # the instance's
PARTIAL_DIR = ".awsrun-partial"
BUSY_MARK = "awsrun-busy"
STEP_BEGIN, STEP_EXIT = "awsrun-step-output", "awsrun-step-exit "  # push_then's step on rsync's stderr
# rsync's own exit codes (rsync(1), EXIT VALUES)
PARTIAL, VANISHED = 23, 24
_MISSING = ("command not found", "No such file or directory", "not found")
_PROGRESS = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)\s+(\d+:\d\d:\d\d)")

# (bytes so far, percent, rate text, eta text): what progress2 says, for a progress display
Progress = Callable[[int, int, str, str], None]


class RsyncMissing(Exception):
    """rsync is not installed here or on the instance: move the files over SFTP (awsrun.transfer.sftp_push)."""


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
    lines: list[str] = []
    try:
        code, _, errors = stream_output(process, stdin, lambda line: _take(line, lines, on_progress),
                                        separator=rb"[\r\n]")
    finally:  # Ctrl-C (or any error here): rsync parks its partial file and ends
        stop_process(process, grace_s=10)
    return Run(code, lines, errors.decode(errors="replace").splitlines())


def _take(line: str, lines: list[str], on_progress: Progress | None) -> None:
    match = _PROGRESS.match(line)
    if match:
        if on_progress is not None:
            on_progress(int(match.group(1).replace(",", "")), int(match.group(2)), match.group(3), match.group(4))
    elif line.strip():
        lines.append(line)


def check_missing(run: Run, shell: Shell) -> None:
    text = "\n".join(run.errors)
    if run.code in (12, 14, 127) and shell.ssh is not None and "rsync" in text and any(m in text for m in _MISSING):
        raise RsyncMissing("rsync is not installed on the instance")


def fail_for(run: Run, what: str, remote: Remote, where: str | None = None, needed: int = 0) -> None:
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
    from awsrun.job.tmux import remote_path

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


def parse_stats(lines: list[str]) -> dict[str, int]:
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
    from awsrun.job.tmux import remote_path

    steps = [f"ln -sfn {shlex.quote(tree.entries[rel][1])} {remote_path(remote_root + '/' + rel)}"
             for rel in absolute_links(tree)]
    return " && ".join(steps) or None


def push(remote: Remote, tree: LocalTree, remote_root: str, *, busy: str | None = None,
         on_progress: Progress | None = None) -> SyncReport:
    """Make `remote_root` hold the project's files. `busy`: a shell test run first on the instance; when
    it succeeds nothing is written and JobBusy is raised."""
    return push_then(remote, tree, remote_root, busy=busy, on_progress=on_progress)[0]


def push_then(remote: Remote, tree: LocalTree, remote_root: str, *, busy: str | None = None,
              then: str | None = None, on_progress: Progress | None = None) -> tuple[SyncReport, Result | None]:
    """push, then the shell step `then` on the instance once the files are there: in rsync's own SSH session
    (rsync's client waits for it), so a submit is one session, not two. -> (the report, the step's result:
    its stdout and stderr come back together, as both)."""
    from awsrun.job.tmux import remote_path

    shell = shell_of(remote)
    if shell.ssh is None:
        if busy is not None and remote.run(busy).ok:
            raise JobBusy()
        Path(os.path.expanduser(remote_root)).mkdir(parents=True, exist_ok=True)
        rsync_path = None
    else:
        check = f"if {busy}; then echo {BUSY_MARK} >&2; exit 99; fi; " if busy else ""
        root = remote_path(remote_root)
        receive = f"{{ [ -d {root} ] || mkdir -p {root}; }} && {shlex.quote(REMOTE_RSYNC)}"  # no exec once there
        rsync_path = check + receive if then is None else _with_step(check, receive, then)
    argv = [RSYNC, "-rlpt", "--delete", "--no-devices", "--no-specials", f"--partial-dir={PARTIAL_DIR}",
            "--stats", "--out-format=%i %n", "--info=progress2" if on_progress else "--info=none,stats2",
            "--from0", "--filter=. -", *shell.options(rsync_path),
            str(tree.root) + "/", shell.location(remote_root) + "/"]
    rules = b"".join(rule.encode("utf-8", "surrogateescape") + b"\0" for rule in filter_rules(tree))
    run = run_rsync(argv, shell, rules, on_progress)
    if any(BUSY_MARK in line for line in run.errors):
        raise JobBusy()
    step, run = _step_of(run, then)
    check_missing(run, shell)
    warnings = list(tree.warnings)
    if run.code == VANISHED:
        warnings += [f"not synced: {line.split(': ', 1)[-1]} (it went away while sending)"
                     for line in run.errors if "vanished" in line]
    elif run.code != 0:
        needed = sum(entry[1] for entry in tree.entries.values() if entry[0] == "f")
        fail_for(run, f"write the project into {remote_root} on {remote.name}", remote, remote_root, needed)
    items = [line for line in run.lines if re.match(r"^[<>ch.*][fdLDS+.]", line)]
    sent = sum(1 for line in items if line[:2] in (">f", "cL", "<f"))
    deleted = sum(1 for line in items if line.startswith("*deleting") and not line.endswith("/"))
    stats = parse_stats(run.lines)
    files = sum(1 for entry in tree.entries.values())
    report = SyncReport(sent, stats.get("Total bytes sent", 0), stats.get("Total transferred file size", 0),
                        deleted, max(0, files - sent), remote_root, tuple(warnings))
    if then is not None and step is None:  # this machine, or a session that ended before the step
        step = remote.run(then)
    return report, step


def _with_step(check: str, receive: str, then: str) -> str:
    """rsync's remote command with `then` after the receiver: a shell function called with the receiver's
    arguments (rsync appends them). The step runs in a subshell (its `exit` ends only it), reads nothing
    of rsync's stream, and writes on stderr between STEP_BEGIN and its exit code's line."""
    return (f"awsrun_push() {{ {receive} \"$@\"; rc=$?; if [ $rc = 0 ]; then echo {STEP_BEGIN} >&2; "
            f"( {then} ) </dev/null >&2; echo \"{STEP_EXIT}$?\" >&2; fi; exit $rc; }}; {check}awsrun_push")


def _step_of(run: Run, then: str | None) -> tuple[Result | None, Run]:
    """(the step's result, the run without its lines) from what _with_step wrote on stderr."""
    if then is None or STEP_BEGIN not in run.errors:
        return None, run
    begin = run.errors.index(STEP_BEGIN)
    end = next((i for i in range(begin + 1, len(run.errors)) if run.errors[i].startswith(STEP_EXIT)), None)
    code = run.errors[end][len(STEP_EXIT):].strip() if end is not None else ""
    output = "".join(line + "\n" for line in run.errors[begin + 1:end])
    if not code.isdigit():  # the session ended inside the step: never run it again, say it broke
        return Result(then, 255, output, output), Run(run.code, run.lines, run.errors[:begin])
    return Result(then, int(code), output, output), Run(run.code, run.lines, run.errors[:begin] + run.errors[end + 1:])


class JobBusy(Exception):
    """The push's busy test said yes on the instance: nothing was written."""
