"""Atomic, rotating checkpoints, and the config check that guards resuming.

A checkpoint is written to a temporary file, fsynced, then renamed over its
final name (``os.replace`` is atomic on POSIX), and the directory is fsynced,
so a crash or a SIGKILL leaves either the old set of checkpoints or the new
one, never a half-written file under a real name.
"""

from __future__ import annotations

import os
import re
import sys

import torch

SUBDIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


class ResumeError(RuntimeError):
    """The checkpoint in the output directory belongs to a different run (reported as one line)."""


def checkpoint_dir(out_dir: str) -> str:
    return os.path.join(out_dir, SUBDIR)


def list_checkpoints(out_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint, oldest first."""
    folder = checkpoint_dir(out_dir)
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, name))
             for name in os.listdir(folder) if (m := _NAME.match(name))]
    return sorted(found)


def save_checkpoint(out_dir: str, step: int, state: dict, keep: int) -> str:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the newest ``keep``."""
    folder = checkpoint_dir(out_dir)
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, f"ckpt-{step:08d}.pt")
    temporary = f"{final}.tmp{os.getpid()}"
    with open(temporary, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, final)
    _fsync_directory(folder)
    for _, old in list_checkpoints(out_dir)[:-keep]:
        os.remove(old)
    for name in os.listdir(folder):  # leftovers of saves that were killed midway
        if ".pt.tmp" in name and not name.endswith(f".tmp{os.getpid()}"):
            os.remove(os.path.join(folder, name))
    return final


def _fsync_directory(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_latest_checkpoint(out_dir: str) -> tuple[dict, str] | None:
    """The newest readable checkpoint and its path, or None when there is none."""
    for _, path in reversed(list_checkpoints(out_dir)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as err:  # noqa: BLE001 - a damaged file: fall back to the previous one
            print(f"warning: skipping unreadable checkpoint {path}: {err}", file=sys.stderr, flush=True)
    return None


def check_resumable(saved: dict, current: dict, keys: tuple[str, ...], path: str) -> None:
    """Raise ResumeError if ``saved`` and ``current`` configs differ in any of ``keys``."""
    differences = [f"{key}={saved.get(key)!r} (now {current.get(key)!r})"
                   for key in keys if saved.get(key) != current.get(key)]
    if differences:
        raise ResumeError(
            f"refusing to resume from {path}: it was made with {', '.join(differences)}; "
            "use the same flags or another --out (under awsrun: submit without --resume, or with "
            "another --name)"
        )
