"""The project as it is synced: the ignore rules, the scan (symlinks that leave the project dropped), the
reports of a push and a pull, the check of a name that came from an instance, and the command that lists
a target's tree in one round trip (the walker shipped with the project's rules, printing a JSON manifest:
size, mtime_ns and mode per file). The files themselves move with rsync (awsrun.transfer.rsync) or, where rsync
is missing, over SFTP (awsrun.transfer.sftp_push, awsrun.transfer.sftp_pull).

Ignore rules (gitignore syntax: `*`, `?`, `[...]`, `**`, `/` anchoring, trailing `/` for directories,
`!` negation, `\\` escapes), later tiers winning: DEFAULT_IGNORE < every `.gitignore` < every
`.awsrunignore`. As in git, a file inside an excluded directory cannot be re-included; re-include the
directory (`!/data/` in .awsrunignore).
"""
from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from awsrun.errors import RemoteError
from awsrun.job.tmux import remote_path
from awsrun.transfer import list_manifest, walker
from awsrun.transfer.ignore import (
    DEFAULT_IGNORE,
    compile_tiers,
    parse_ignore,
    parse_patterns,
)
from awsrun.transfer.walker import (  # noqa: F401 (is_ignored: the rule check, for callers)
    is_ignored,
    walk_tree,
)

if TYPE_CHECKING:
    from types import ModuleType

TEMP_PREFIX = ".awsrun-tmp-"


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
class SyncReport:
    files_sent: int
    bytes_sent: int          # on the wire
    bytes_raw: int           # the files' sizes
    deleted: int
    unchanged: int
    remote_dir: str
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {**asdict(self), "warnings": list(self.warnings)}


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
