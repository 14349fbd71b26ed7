"""The manifest awsrun last pushed to a directory on a target, remembered in AWSRUN_HOME, so that a submit
with nothing changed is ONE round trip and sends no file at all.

After a push the target's tree is what was sent (rsync -t -p keeps each file's mtime and mode), so awsrun
keeps the local manifest of that push. When the next submit's manifest equals it, one command asks the
target to walk its tree with the same rules and launches only if the SHA-256 of that manifest is the one
remembered (unchanged_then); otherwise it exits CHANGED having written nothing, and the caller pushes
(awsrun.job.push_launch). Nothing is trusted that the target did not confirm: a file edited, deleted or added
there, other ignore rules, another machine behind the same name, all change the digest.

Both sides hash mtimes in whole seconds: an rsync without nanosecond times (openrsync on macOS) sets
.000000000, and rsync's own quick check compares seconds too.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

from awsrun.job.tmux import EXIT_RUNNING, remote_path
from awsrun.transfer import check_manifest, walker
from awsrun.transfer import scan as sync

CHANGED = 75  # EX_TEMPFAIL: the target's tree is not what was remembered (or could not be walked)


def digest(manifest: dict[str, list]) -> str:
    """What both sides hash (check_manifest.canonical's twin): canonical JSON, mtimes in whole seconds."""
    canonical = {path: [entry[0], entry[1], entry[2] // 1_000_000_000, *entry[3:]] if entry[0] == "f" else entry
                 for path, entry in manifest.items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def unchanged_then(remote_root: str, python: str, expected: str, busy: str, then: str) -> str:
    """One shell line: exit EXIT_RUNNING when `busy` succeeds; run `then` when the target's manifest of
    `remote_root` has digest `expected`; else exit CHANGED, nothing written. stdin: tiers_input."""
    program = sync.target_program(walker, check_manifest)
    check = sync.python_command(python, program, remote_path(remote_root), shlex.quote(expected))
    # any failure of the check (no python3 there) is CHANGED too: the push that follows needs none
    return f"if {busy}; then exit {EXIT_RUNNING}; fi; {check} >/dev/null 2>&1 || exit {CHANGED}; {then}"


def tiers_input(tree: sync.LocalTree) -> bytes:
    """The walker's rules for the target, as its stdin."""
    return sync.manifest_input(tree)


class ManifestCache:
    """One remembered manifest per (machine, remote directory), in AWSRUN_HOME/manifests (0700)."""

    def __init__(self, directory: Path, *key: str):
        self.directory = directory
        self.path = directory / (hashlib.sha256("\0".join(key).encode()).hexdigest()[:32] + ".json")
        self._matched: dict[str, list] | None = None  # what matches() found remembered: no need to write it again

    def load(self) -> dict[str, list] | None:
        try:
            manifest = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None

    def matches(self, manifest: dict[str, list]) -> str | None:
        """The digest to ask the target for, when `manifest` is the one remembered; else None."""
        remembered = self.load()
        if remembered is None:
            return None
        try:
            expected = digest(manifest)
            if digest(remembered) != expected:
                return None
        except (TypeError, IndexError):  # a cache file of another shape: only a cache
            return None
        self._matched = remembered
        return expected

    def save(self, manifest: dict[str, list]) -> None:
        import tempfile

        if manifest == self._matched and self.path.exists():
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".manifest-")
            with os.fdopen(fd, "w") as handle:  # dumps: json.dump encodes in Python, 5x slower for 10,000 files
                handle.write(json.dumps(manifest, separators=(",", ":")))
            os.replace(temp, self.path)
        except OSError:
            self.forget()  # only a cache: the next submit asks the target instead

    def forget(self) -> None:
        self._matched = None
        try:
            self.path.unlink()
        except OSError:
            pass
