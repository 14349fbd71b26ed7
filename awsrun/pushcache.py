"""The last pushed manifest, remembered in AWSRUN_HOME, so that a submit is ONE round trip.

After a push, the target's tree is exactly what was sent (files are written with their mtime_ns and
mode), so awsrun keeps that manifest locally. The next submit plans against it without asking, and
sends one command: the target walks its tree with the same rules, and only if the SHA-256 of its
manifest equals the one remembered does it apply the payload (and the launch follows in the same shell
line); otherwise it sends its manifest back, applies nothing, and exits CHANGED: the caller plans
again from what the target really holds (the usual second round trip). Nothing is trusted that the
target did not confirm: a file edited, deleted or added there, other ignore rules, another machine
behind the same name, all change the digest.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

from awsrun import sync
from awsrun.remote import apply_push, check_manifest, walker
from awsrun.tmux import remote_path

CHANGED = 75  # EX_TEMPFAIL: the target's tree is not what was remembered; its manifest is on stdout

def digest(manifest: dict[str, list]) -> str:
    """What both sides hash: the manifest as canonical JSON (same on any Python 3)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def checked_apply_command(remote_root: str, python: str, expected: str) -> str:
    """Reads `tiers JSON line + payload` on stdin; applies the payload only when the target's manifest
    has digest `expected`, else prints that manifest and exits CHANGED."""
    program = sync.target_program(walker, check_manifest, apply_push)
    return sync.python_command(python, program, remote_path(remote_root), shlex.quote(expected))


def checked_input(tree: sync.LocalTree, payload: bytes) -> bytes:
    return sync.manifest_input(tree) + b"\n" + payload


class ManifestCache:
    """One remembered manifest per (machine, remote directory), in AWSRUN_HOME/manifests (0700)."""

    def __init__(self, directory: Path, *key: str):
        self.directory = directory
        self.path = directory / (hashlib.sha256("\0".join(key).encode()).hexdigest()[:32] + ".json")

    def load(self) -> dict[str, list] | None:
        try:
            manifest = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None

    def save(self, manifest: dict[str, list]) -> None:
        import tempfile

        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".manifest-")
            with os.fdopen(fd, "w") as handle:
                json.dump(manifest, handle, separators=(",", ":"))
            os.replace(temp, self.path)
        except OSError:
            self.forget()  # only a cache: the next submit asks the target instead

    def forget(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass
