"""Small project trees written for a test."""
from __future__ import annotations

from pathlib import Path


def tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write each relative path with its content under `root` (parents made); return `root`."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root
