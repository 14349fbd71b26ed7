"""The push stream (awsrun.sync.payload -> awsrun.remote.apply_push on the target): files of any size arrive
byte-exact with their mode and mtime_ns, a stream cut anywhere writes nothing half and says so, and a
name that would leave the project directory is skipped, never written."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from awsrun import sync
from awsrun.remote.local import LocalRemote

PY = sys.executable


def _files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def _apply(target: Path, data: bytes):
    return LocalRemote().run(sync.apply_command(str(target), PY), stdin=data)


def test_big_compressible_random_and_many_small_files_arrive_exact(tmp_path):
    files = {"zeros.bin": bytes(30_000_000), "random.bin": os.urandom(3_000_000)}
    files.update({f"pkg{i % 7}/m{i}.py": f"x = {i}\n".encode() * (i % 50) for i in range(300)})
    root = _files(tmp_path / "p", files)
    os.chmod(root / "pkg1" / "m1.py", 0o750)
    os.symlink("pkg1/m1.py", root / "link.py")
    target = tmp_path / "m" / "p"
    for compress in (True, False):
        report = sync.push(LocalRemote(), sync.scan(root), str(target), PY, compress=compress)
        assert report.files_sent == (303 if compress else 1)  # the second round: zeros.bin only
        listed = LocalRemote().run(sync.manifest_command(str(target), PY), stdin=b"[[], [], []]")
        assert sync.parse_manifest(listed.stdout, "local") == sync.scan(root).entries
        for rel, content in files.items():
            assert (target / rel).read_bytes() == content, rel
        assert os.readlink(target / "link.py") == "pkg1/m1.py"
        files["zeros.bin"] = bytes(30_000_001)
        (root / "zeros.bin").write_bytes(files["zeros.bin"])


def test_a_stream_cut_after_any_record_leaves_whole_files_only_and_says_so(tmp_path):
    root = _files(tmp_path / "p", {"a.txt": b"A" * 5000, "b.txt": b"B" * 5000, "c.txt": b"C" * 5000})
    tree = sync.scan(root)
    data, _ = sync.payload(tree, sync.plan(tree.entries, {}), compress=False)
    for cut in (data.index(b"B" * 5000) + 5000, data.index(b"C" * 5000) + 10, len(data) - 1):
        target = tmp_path / f"m{cut}"
        result = _apply(target, data[:cut])
        assert result.exit_code != 0 and "ended early" in result.stderr
        assert (target / "a.txt").read_bytes() == b"A" * 5000
        assert all((target / n).read_bytes() == n[0].upper().encode() * 5000 for n in ("b.txt", "c.txt")
                   if (target / n).exists())
        assert not (target / "c.txt").exists() or cut == len(data) - 1
        assert [p.name for p in target.iterdir() if p.name.startswith(sync.TEMP_PREFIX)] == []


def test_names_that_would_leave_the_project_directory_are_skipped(tmp_path):
    def record(header: dict, body: bytes = b"") -> bytes:
        return json.dumps(header).encode() + b"\n" + body

    hostile = ["../escape.txt", "/tmp/absolute.txt", "a/../../up.txt", "a//b.txt", "./dot.txt"]
    stream = record({"delete": ["../victim.txt", "/etc/hostname"]})
    for name in hostile + ["ok.txt"]:
        stream += record({"name": name, "size": 2, "mode": 0o644, "mtime_ns": 10**18}, b"hi")
    stream += record({"end": True})
    victim = _files(tmp_path, {"victim.txt": b"keep"}) / "victim.txt"
    target = tmp_path / "machine" / "project"
    result = _apply(target, stream)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["ok.txt"]
    assert sync.remote_warnings(result.stderr) == [
        f"skipped {name!r}: not a plain path below the project directory" for name in hostile]
    assert victim.read_bytes() == b"keep" and not (tmp_path / "machine" / "escape.txt").exists()
    assert not (tmp_path / "up.txt").exists() and not Path("/tmp/absolute.txt").exists()
