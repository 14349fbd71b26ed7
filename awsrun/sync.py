"""The project as it is synced (scan: ignore rules, symlinks), and awsrun's own incremental transfer, used
where rsync (awsrun.transfer) is missing here or on the instance. It holds a push's payload and a pull's
archive in memory: big files want rsync.

Push (`submit`): the local tree is walked (ignore rules applied, symlinks never followed), the target's
tree is read in ONE remote command (the same walker, shipped with the same rules, prints a JSON
manifest: size, mtime_ns and mode per file), and only new or changed files travel, as one zlib'd stream
of records (`payload`) on the stdin of a second command, which also deletes what the project no
longer has. The target writes every file under a temporary name and renames it into place, with the
exact mtime_ns and mode: a killed transfer leaves old files or new files, never half files, and the
next manifest compares equal for everything that arrived.

Pull (`pull`): one remote command reads the local manifest on stdin and sends back (base64 on stdout)
a tar of the files that differ. Nothing from the remote is trusted: names are checked, only regular
files are written, each under the destination through directory handles that refuse symlinks.

Ignore rules (gitignore syntax: `*`, `?`, `[...]`, `**`, `/` anchoring, trailing `/` for directories,
`!` negation, `\\` escapes), later tiers winning: DEFAULT_IGNORE < every `.gitignore` < every
`.awsrunignore`. As in git, a file inside an excluded directory cannot be re-included; re-include the
directory (`!/data/` in .awsrunignore).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shlex
import stat
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from awsrun.errors import AwsrunError, NotFoundError, RemoteError
from awsrun.ignore import DEFAULT_IGNORE, compile_tiers, parse_ignore, parse_patterns
from awsrun.remote import apply_push, list_manifest, pull_send, walker
from awsrun.remote.base import Remote
from awsrun.remote.walker import is_ignored, walk_tree  # noqa: F401 (is_ignored: the rule check, for callers)
from awsrun.tmux import remote_path

if TYPE_CHECKING:
    import tarfile
    from types import ModuleType

TEMP_PREFIX = ".awsrun-tmp-"
MTIME_KEY = "AWSRUN.mtime_ns"
COMPRESS_LEVEL = 1  # zlib's fastest: code still shrinks ~3x, and on a fast link compression is pure cost
WARNING_MARK = "awsrun-warning: "  # what awsrun.remote.apply_push.warn writes on stderr


# --- the local side ---------------------------------------------------------------------------------

@dataclass
class LocalTree:
    root: Path
    entries: dict[str, list]
    tiers: list[list[list]]                 # raw rules, highest tier first (JSON for the target)
    warnings: list[str] = field(default_factory=list)
    patterns: list[list[list]] = field(default_factory=list)  # the same rules as globs (for rsync)
    dropped: list[str] = field(default_factory=list)          # symlinks that lead out: never sent


def scan(root: Path) -> LocalTree:
    """The project as it would be synced: ignore rules applied, symlinks that leave it dropped."""
    root = root.resolve()
    raw = {"awsrun": [], "git": [], "default": parse_ignore(DEFAULT_IGNORE)}
    compiled = {name: compile_tiers([rules])[0] for name, rules in raw.items()}
    globs = {"awsrun": [], "git": [], "default": parse_patterns(DEFAULT_IGNORE)}
    tiers = [compiled["awsrun"], compiled["git"], compiled["default"]]
    warnings: list[str] = []

    def read_rules(here: str, rel: str) -> None:
        for file_name, tier in ((".gitignore", "git"), (".awsrunignore", "awsrun")):
            path = os.path.join(here, file_name)
            if os.path.isfile(path) and not os.path.islink(path):
                try:
                    text = Path(path).read_text(errors="replace")
                except OSError as exc:
                    warnings.append(f"cannot read {rel + '/' if rel else ''}{file_name}: {exc.strerror}")
                    continue
                rules = parse_ignore(text, rel)
                globs[tier].extend(parse_patterns(text, rel))
                raw[tier].extend(rules)
                compiled[tier].extend(compile_tiers([rules])[0])

    def other(rel: str, mode: int) -> None:
        warnings.append(f"not synced: {rel!r} is not a regular file, directory or symlink")

    entries = walk_tree(str(root), tiers, on_dir=read_rules, on_other=other)
    dropped = []
    for rel, entry in list(entries.items()):
        if entry[0] != "l":
            continue
        target = _link_inside(root, rel, entry[1])
        if target is None:
            warnings.append(f"not synced: symlink {rel!r} -> {entry[1]!r} leads outside the project")
            del entries[rel]
            dropped.append(rel)
        else:
            entry[1] = target
    return LocalTree(root, entries, [raw["awsrun"], raw["git"], raw["default"]], warnings,
                     [globs["awsrun"], globs["git"], globs["default"]], dropped)


def _link_inside(root: Path, rel: str, target: str) -> str | None:
    """The link text to send when the link resolves inside the project (made relative), else None."""
    link = root / rel
    try:
        resolved = Path(os.path.realpath(link))
    except OSError:
        return None
    if not resolved.exists() or not (resolved == root or root in resolved.parents):
        return None
    if not os.path.isabs(target):
        return target
    return os.path.relpath(resolved, link.parent)


@dataclass(frozen=True)
class SyncPlan:
    send: list[str]
    delete: list[str]
    unchanged: int


def plan(local: dict[str, list], remote: dict[str, list]) -> SyncPlan:
    send = sorted(path for path, entry in local.items() if remote.get(path) != entry)
    delete = sorted(path for path in remote if path not in local)
    return SyncPlan(send, delete, len(local) - len(send))


@dataclass(frozen=True)
class SyncReport:
    files_sent: int
    bytes_sent: int          # on the wire (compressed)
    bytes_raw: int           # the files' sizes
    deleted: int
    unchanged: int
    remote_dir: str
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {**asdict(self), "warnings": list(self.warnings)}


def payload(tree: LocalTree, sync_plan: SyncPlan, *, compress: bool = True) -> tuple[bytes, int]:
    """The stream for the target (awsrun.remote.apply_push; zlib'd unless `compress` is False, e.g. for a
    copy on this machine): records of a JSON header line and the file's bytes, the deletion list first and an
    end mark last, so that a cut stream is told from a whole one. -> (bytes, raw size of the files)"""
    out = bytearray()

    def record(header: dict, data: bytes = b"") -> None:
        out.extend(json.dumps(header).encode() + b"\n")
        out.extend(data)

    raw = 0
    record({"delete": sync_plan.delete})
    for rel in sync_plan.send:
        entry = tree.entries[rel]
        if entry[0] == "l":
            record({"name": rel, "link": entry[1]})
            continue
        try:
            fd = os.open(tree.root / rel, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise AwsrunError(f"cannot read {rel!r} of the project: {exc.strerror}",
                              hint="run the command again") from None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        # what was read is what is described; mtime 0 for a file that changed while read: the next sync
        # sends it again
        mtime_ns = entry[2] if len(data) == entry[1] else 0
        record({"name": rel, "size": len(data), "mode": entry[3], "mtime_ns": mtime_ns}, data)
        raw += len(data)
    record({"end": True})
    return (zlib.compress(out, COMPRESS_LEVEL) if compress else bytes(out)), raw


# --- commands the target runs ---------------------------------------------------------------------

def target_program(*modules: ModuleType) -> str:
    """One program for the target: the source text of these modules of awsrun.remote, in order (each
    defines its functions and runs its own only as __main__, as `python3 -c` runs)."""
    return "\n".join(Path(module.__file__).read_text() for module in modules)


def python_command(python: str, program: str, *words: str) -> str:
    """A shell line running `program` with `python` and the already quoted `words` as its arguments:
    isolated (-I: no PYTHON* variables, user site or script directory) and without site (-S: the
    helpers are standard library only; site is half of a bare start of Debian's python3.11)."""
    return " ".join([shlex.quote(python), "-I", "-S", "-c", shlex.quote(program), *words])


def manifest_command(remote_root: str, python: str) -> str:
    """Prints the target's manifest of `remote_root` as JSON; stdin: the rule tiers (manifest_input)."""
    program = target_program(walker, list_manifest)
    return python_command(python, program, remote_path(remote_root))


def manifest_input(tree: LocalTree) -> bytes:
    return json.dumps(tree.tiers).encode()


def parse_manifest(text: str, where: str) -> dict[str, list]:
    try:
        manifest = json.loads(text)
    except ValueError:
        raise RemoteError(f"the file list from {where} is unreadable: {text.strip()[:200]!r}") from None
    if not isinstance(manifest, dict):
        raise RemoteError(f"the file list from {where} is unreadable")
    return manifest


def apply_command(remote_root: str, python: str) -> str:
    """Reads the payload on stdin: deletes, then writes each file whole (temp name + rename)."""
    return python_command(python, target_program(apply_push), remote_path(remote_root))


def remote_warnings(stderr: str) -> list[str]:
    return [line[len(WARNING_MARK):] for line in stderr.splitlines() if line.startswith(WARNING_MARK)]


def push(remote: Remote, tree: LocalTree, remote_root: str, python: str, *, compress: bool = True) -> SyncReport:
    """Make `remote_root` on the target hold the project's files: two round trips, one when nothing
    changed."""
    listing = remote.run(manifest_command(remote_root, python), stdin=manifest_input(tree))
    listing.check(f"read the file list of {remote_root} on {remote.name}")
    remote_entries = parse_manifest(listing.stdout, remote.name)
    sync_plan = plan(tree.entries, remote_entries)
    if not sync_plan.send and not sync_plan.delete:
        return SyncReport(0, 0, 0, 0, sync_plan.unchanged, remote_root, tuple(tree.warnings))
    data, raw = payload(tree, sync_plan, compress=compress)
    result = remote.run(apply_command(remote_root, python), stdin=data)
    result.check(f"write the project into {remote_root} on {remote.name}")
    return SyncReport(len(sync_plan.send), len(data), raw, len(sync_plan.delete), sync_plan.unchanged,
                      remote_root, tuple(tree.warnings) + tuple(remote_warnings(result.stderr)))


# --- pull -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PullReport:
    files: int
    bytes_raw: int
    bytes_received: int
    unchanged: int
    destination: Path
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {**asdict(self), "destination": str(self.destination), "warnings": list(self.warnings)}


def local_manifest(destination: Path) -> dict[str, list[int]]:
    """What the destination already holds: {path: [size, mtime_ns]} of its regular files."""
    if not destination.is_dir():
        return {}
    entries = walk_tree(str(destination), [])
    return {path: [e[1], e[2]] for path, e in entries.items() if e[0] == "f"}


def pull_command(remote_source: str, python: str) -> str:
    """Sends (base64 on stdout) a tar of what differs from the manifest read on stdin."""
    return python_command(python, target_program(walker, pull_send), remote_path(remote_source))


def pull(remote: Remote, remote_source: str, destination: Path, python: str) -> PullReport:
    have = local_manifest(destination)
    result = remote.run(pull_command(remote_source, python), stdin=json.dumps(have).encode())
    if result.exit_code == 3:
        raise NotFoundError(f"{remote_source} does not exist on {remote.name}",
                            hint="the job has written no output yet, or the path is wrong (`awsrun ssh -- ls`)")
    result.check(f"read {remote_source} on {remote.name}")
    try:
        data = base64.b64decode(result.stdout.strip(), validate=True)
    except ValueError:
        raise RemoteError(f"{remote.name} sent something that is not a file archive") from None
    return unpack(data, destination, unchanged=len(have), received=len(result.stdout))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(name: str) -> str | None:
    """Why a member name from the remote cannot be written, or None when it is a plain relative path."""
    if _CONTROL.search(name):
        return "its name holds a control character (newline, tab, ...)"
    if name.startswith("/"):
        return "it is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "it climbs out with '..'"
    if any(part in ("", ".") for part in parts):
        return "its name is not a plain relative path"
    return None


def unpack(data: bytes, destination: Path, *, unchanged: int = 0, received: int | None = None) -> PullReport:
    """Write the regular files of a tar from the remote under `destination`, and nothing else, nowhere
    else: names are checked, links and special files skipped, and every directory on the way is opened
    with O_NOFOLLOW, so neither the archive nor a symlink already in the destination leads outside."""
    import io
    import tarfile  # only pull reads a tar: submit's path goes without it

    warnings: list[str] = []
    files = raw = 0
    destination.mkdir(parents=True, exist_ok=True)
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise RemoteError(f"the archive from the instance is unreadable: {exc}") from None
    root_fd = os.open(destination, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with archive:
            for member in archive:
                name = member.name
                reason = check_name(name)
                if reason is None and member.isdir():
                    continue
                if reason is None and not member.isreg():
                    kind = ("symlink" if member.issym() else "hard link" if member.islnk()
                            else "device file" if member.ischr() or member.isblk()
                            else "fifo" if member.isfifo() else "special file")
                    link = f" -> {member.linkname!r}" if member.issym() or member.islnk() else ""
                    reason = f"it is a {kind}{link}; pull copies regular files only"
                if reason is not None:
                    warnings.append(f"not pulled: {name!r}: {reason}")
                    continue
                source = archive.extractfile(member)
                problem = _write_below(root_fd, name.split("/"), source, member)
                if problem:
                    warnings.append(f"not pulled: {name!r}: {problem}")
                    continue
                files += 1
                raw += member.size
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise RemoteError(f"the archive from the instance is damaged: {exc}") from None
    finally:
        os.close(root_fd)
    return PullReport(files, raw, len(data) if received is None else received, unchanged, destination,
                      tuple(warnings))


def _write_below(root_fd: int, parts: list[str], source, member: tarfile.TarInfo) -> str | None:
    fds = []
    here = root_fd
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
        temp = f"{TEMP_PREFIX}{os.getpid()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=here)
        try:
            with os.fdopen(fd, "wb") as handle:
                while True:
                    block = source.read(1 << 20)
                    if not block:
                        break
                    handle.write(block)
                handle.flush()
                os.fchmod(handle.fileno(), member.mode & 0o755)
                ns = int(member.pax_headers.get(MTIME_KEY, member.mtime * 1_000_000_000))
                os.utime(handle.fileno(), ns=(ns, ns))
            os.replace(temp, name, src_dir_fd=here, dst_dir_fd=here)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=here)
            except OSError:
                pass
            raise
        return None
    finally:
        for fd in fds:
            os.close(fd)
