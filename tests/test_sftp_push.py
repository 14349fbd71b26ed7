"""Push without rsync (awsrun.transfer.sftp_push) on the local provider and over both SSH layers to a loopback
host: exact copies, only what changed, deletions that spare what is ignored, whole files only after a
transfer is cut, stale temporary files cleared, a directory in the way reported, the busy test."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from awsrun.errors import RemoteError
from awsrun.remote import sftp_pipe
from awsrun.remote.local import LocalRemote
from awsrun.transfer import rsync, scan, sftp_push, sftp_session
from tests.harness.files import tree
from tests.sftp_targets import target, target2  # noqa: F401 (fixtures)

ODD = ["sp ace.py", "quo'te\".py", "ü漢.py", "new\nline.py", "-dash.py", "$(touch x).py", "back\\slash.py"]



def state(root: Path) -> dict[str, tuple]:
    """Every file and link under root: bytes, whole-second mtime and mode; a link's text."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("l", os.readlink(path))
            else:
                info = path.stat()
                out[rel] = ("f", path.read_bytes(), info.st_mtime_ns // 10**9, stat.S_IMODE(info.st_mode))
    return out


def project_state(root: Path) -> dict[str, tuple]:
    entries = scan.scan(root).entries
    return {rel: ("l", e[1]) if e[0] == "l" else ("f", (root / rel).read_bytes(), e[2] // 10**9, e[3])
            for rel, e in entries.items()}


def test_push_copies_exactly_then_only_what_changed_and_deletes_what_went(target, tmp_path):
    root = tree(tmp_path / "p", {"a.py": "a", "pkg/b.py": "b" * 5000, "pkg/deep/c.py": "c", **{n: n for n in ODD}})
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o750)
    (root / "link").symlink_to("pkg/b.py")
    seen = []
    first = sftp_push.push(target.remote, scan.scan(root), target.root, on_progress=lambda *p: seen.append(p))
    assert (first.files_sent, first.deleted, first.unchanged) == (len(ODD) + 5, 0, 0)
    assert first.bytes_raw == 1 + 5000 + 1 + sum(len(n.encode()) for n in ODD) + len("#!/bin/sh\n")
    assert state(target.path) == project_state(root)  # bytes, mtime, mode, links
    assert seen[-1][:2] == (first.bytes_raw, 100)

    again = sftp_push.push(target.remote, scan.scan(root), target.root)
    assert again == scan.SyncReport(0, 0, 0, 0, len(ODD) + 5, target.root)

    # results and caches the job made on the machine are not the project's to delete
    tree(target.path, {"runs/work/model.pt": "w", "pkg/__pycache__/b.cpython.pyc": "", "data/set.bin": "d"})
    target.own()
    (root / "a.py").write_text("A2")
    (root / "pkg" / "deep" / "c.py").unlink()
    (root / "pkg" / "deep").rmdir()
    (root / "new file.py").write_text("n")
    third = sftp_push.push(target.remote, scan.scan(root), target.root)
    assert (third.files_sent, third.deleted, third.bytes_raw) == (2, 1, 3)
    assert (target.path / "a.py").read_text() == "A2" and (target.path / "new file.py").read_text() == "n"
    assert not (target.path / "pkg" / "deep").exists()  # emptied directories go too
    for kept in ("runs/work/model.pt", "pkg/__pycache__/b.cpython.pyc", "data/set.bin"):
        assert (target.path / kept).exists(), kept


def test_big_random_and_many_small_files_arrive_exact(target2, tmp_path):
    files = {"zeros.bin": bytes(30_000_000), "random.bin": os.urandom(3_000_000)}
    files.update({f"pkg{i % 7}/m{i}.py": f"x = {i}\n".encode() * (i % 50) for i in range(300)})
    root = tree(tmp_path / "p", files)
    report = sftp_push.push(target2.remote, scan.scan(root), target2.root)
    assert report.files_sent == 302
    assert state(target2.path) == project_state(root)
    (root / "zeros.bin").write_bytes(bytes(30_000_001))
    assert sftp_push.push(target2.remote, scan.scan(root), target2.root).files_sent == 1
    assert (target2.path / "zeros.bin").stat().st_size == 30_000_001


def test_a_cut_transfer_leaves_whole_files_only_and_the_next_push_completes(target, tmp_path, monkeypatch):
    root = tree(tmp_path / "p", {f"f{i}.bin": os.urandom(600_000) for i in range(6)})
    old = {f"f{i}.bin": b"old" for i in range(6)}
    tree(target.path, old)
    target.own()
    added = sftp_session.Meter.add

    def ctrl_c_midway(meter, count):  # the user's Ctrl-C, halfway through the third file
        added(meter, count)
        if meter.done > 1_500_000:
            raise KeyboardInterrupt

    monkeypatch.setattr(sftp_session.Meter, "add", ctrl_c_midway)
    with pytest.raises(KeyboardInterrupt):
        sftp_push.push(target.remote, scan.scan(root), target.root)
    monkeypatch.setattr(sftp_session.Meter, "add", added)
    arrived = [name for name in old if (target.path / name).read_bytes() != b"old"]
    assert len(arrived) == 2
    for name in old:
        assert (target.path / name).read_bytes() in (b"old", (root / name).read_bytes()), name
    assert [p.name for p in target.path.iterdir() if p.name.startswith(scan.TEMP_PREFIX)] == []
    report = sftp_push.push(target.remote, scan.scan(root), target.root)
    assert (report.files_sent, report.unchanged) == (4, 2)
    assert state(target.path) == project_state(root)


KILLED_PUSH = """
import sys
from pathlib import Path
from awsrun.transfer import sftp_push, scan
from tests.sftp_targets import Target
from awsrun.remote.local import LocalRemote
sftp_push.push(LocalRemote(), scan.scan(Path(sys.argv[1])), sys.argv[2])
"""


def _growing_temp_file(target: Path) -> bool:
    """A temp file past 1 MB in `target`; the small file's temp file may be renamed between listing and stat."""
    for path in (target.iterdir() if target.is_dir() else []):
        try:
            if path.name.startswith(scan.TEMP_PREFIX) and path.stat().st_size > 1 << 20:
                return True
        except FileNotFoundError:
            continue
    return False


def test_a_killed_transfer_leaves_whole_files_only_and_its_temp_file_is_cleared_when_stale(tmp_path):
    root = tree(tmp_path / "p", {"a.bin": os.urandom(1000), "b.bin": os.urandom(200 << 20)})
    target = tmp_path / "m" / "p"
    child = subprocess.Popen([sys.executable, "-c", KILLED_PUSH, str(root), str(target)], cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 60
    while not _growing_temp_file(target):
        assert child.poll() is None and time.monotonic() < deadline, "the push ended before it could be killed"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (target / "b.bin").exists()
    temps = [p for p in target.iterdir() if p.name.startswith(scan.TEMP_PREFIX)]
    assert len(temps) == 1
    tree_now = scan.scan(root)
    assert set(sftp_push.target_manifest(LocalRemote(), tree_now, str(target), None)) <= {"a.bin"}
    old = time.time() - 3600
    os.utime(temps[0], (old, old))
    report = sftp_push.push(LocalRemote(), tree_now, str(target))
    assert not temps[0].exists() and (target / "b.bin").read_bytes() == (root / "b.bin").read_bytes()
    assert report.files_sent >= 1


def test_stale_temp_files_of_a_dead_transfer_are_cleared_and_never_listed(target, tmp_path):
    tree(target.path, {"a.py": "a", ".awsrun-tmp-1-1": "half", "sub/.awsrun-tmp-2-1": "half"})
    target.own()
    old = time.time() - 3600
    os.utime(target.path / ".awsrun-tmp-1-1", (old, old))
    empty = scan.scan(tree(tmp_path / "p", {}))
    assert list(sftp_push.target_manifest(target.remote, empty, target.root, None)) == ["a.py"]
    assert not (target.path / ".awsrun-tmp-1-1").exists()
    assert (target.path / "sub" / ".awsrun-tmp-2-1").exists()  # young: may belong to a transfer in progress


def test_a_directory_in_the_way_on_the_machine_is_reported_not_removed(target, tmp_path):
    root = tree(tmp_path / "p", {"thing": "now a file", "ok.py": "ok"})
    tree(target.path, {"thing/__pycache__/precious.pyc": "keep"})  # ignored: never the project's to delete
    target.own()
    report = sftp_push.push(target.remote, scan.scan(root), target.root)
    assert report.warnings == ("skipped 'thing': a directory of that name is in the way on the instance",)
    assert report.files_sent == 1 and (target.path / "ok.py").read_text() == "ok"
    assert (target.path / "thing" / "__pycache__" / "precious.pyc").read_text() == "keep"


def test_when_the_busy_test_says_yes_nothing_is_written(target2, tmp_path):
    root = tree(tmp_path / "p", {"a.py": "a"})
    with pytest.raises(rsync.JobBusy):
        sftp_push.push(target2.remote, scan.scan(root), target2.root, busy="true")
    assert not target2.path.exists()
    assert sftp_push.push(target2.remote, scan.scan(root), target2.root, busy="false").files_sent == 1


def test_garbage_from_the_target_is_an_error_not_a_crash(tmp_path):
    for text in ("not json", "[1, 2]"):
        with pytest.raises(RemoteError, match="unreadable"):
            scan.parse_manifest(text, "host")
    for entry in (["f", "5", 1, 0o644], ["d"], "x", ["f", 1, 2]):
        assert not sftp_push._entry_ok("a", entry)
    assert not sftp_push._entry_ok("../up", ["f", 1, 1, 0o644])
    from awsrun.remote.ssh import sftp_over

    for program in ("echo garbage; sleep 1", "exit 3", "head -c 100000 /dev/urandom"):
        with pytest.raises(RemoteError, match="cannot open SFTP"):
            sftp_over(sftp_pipe.start(["sh", "-c", program], None, "host"), "host")
