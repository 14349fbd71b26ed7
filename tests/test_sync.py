"""awsrun.sync: the ignore rules (exact), the project scan, and push through the real helper programs
(run by a local shell, as the local provider does; the SSH path is in test_jobs_e2e)."""
from __future__ import annotations

import os
import shlex
import stat
import sys
import time
from pathlib import Path

import pytest

from awsrun import ignore, sync
from awsrun.remote.local import LocalRemote

PY = sys.executable


@pytest.mark.parametrize("pattern, regex", [
    ("*.py", r"[^/]*\.py"),
    ("a?c", r"a[^/]c"),
    ("**/foo", r"(?:[^/]*/)*foo"),
    ("a/**/b", r"a/(?:[^/]*/)*b"),
    ("foo/**", r"foo/.*"),
    ("**", r".*"),
    ("a**b", r"a[^/]*b"),
    ("[abc].txt", r"[abc]\.txt"),
    ("[!a-c]x", r"[^/a-c]x"),
    ("[unclosed", r"\[unclosed"),
    (r"\#x\!", r"\#x!"),
    ("a b", r"a\ b"),
])
def test_glob_regex(pattern, regex):
    assert ignore.glob_regex(pattern) == regex


def test_parse_ignore_exact():
    text = "# comment\n\n*.log  \n!keep.log\n/build/\ndocs/*.md\n\\#literal\n\\!bang\ntrailing\\ \n/\n"
    assert ignore.parse_ignore(text, "sub") == [
        ["sub", r"[^/]*\.log", False, False, True],
        ["sub", r"keep\.log", True, False, True],
        ["sub", "build", False, True, False],
        ["sub", r"docs/[^/]*\.md", False, False, False],
        ["sub", r"\#literal", False, False, True],
        ["sub", r"!bang", False, False, True],
        ["sub", r"trailing\ ", False, False, True],
    ]


def _ignored(rules_text: str, path: str, is_dir: bool = False, base: str = "") -> bool:
    tiers = ignore.compile_tiers([ignore.parse_ignore(rules_text, base)])
    return sync.is_ignored(tiers, path, is_dir)


@pytest.mark.parametrize("rules, path, is_dir, expected", [
    ("*.log", "a/b/x.log", False, True),
    ("*.log\n!keep.log", "keep.log", False, False),
    ("*.log\n!keep.log", "a/keep.log", False, False),
    ("/build", "build", True, True),
    ("/build", "src/build", True, False),
    ("build/", "src/build", True, True),
    ("build/", "src/build", False, False),  # a file named build is not a directory
    ("docs/*.md", "docs/a.md", False, True),
    ("docs/*.md", "docs/sub/a.md", False, False),
    ("docs/*.md", "x/docs/a.md", False, False),  # a slash inside anchors to the base
    ("**/cache", "a/b/cache", True, True),
    ("a/**/z", "a/z", False, True),
    ("a/**/z", "a/b/c/z", False, True),
    ("out/**", "out/x/y", False, True),
    ("out/**", "out", True, False),
    ("na?e", "name", False, True),
    ("*", "line\nbreak", False, True),
])
def test_is_ignored(rules, path, is_dir, expected):
    assert _ignored(rules, path, is_dir) is expected


def test_rules_of_a_nested_ignore_file_apply_below_it_only():
    assert _ignored("*.bin", "sub/x.bin", base="sub") is True
    assert _ignored("*.bin", "x.bin", base="sub") is False
    assert _ignored("/only", "sub/only", base="sub") is True
    assert _ignored("/only", "sub/deeper/only", base="sub") is False


def _tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


ODD = ["sp ace.py", "quo'te\".py", "ü漢.py", "new\nline.py", "-dash.py", "$(touch x).py", "back\\slash.py"]


def test_scan_applies_defaults_gitignore_and_awsrunignore_and_keeps_odd_names(tmp_path):
    root = _tree(tmp_path / "p", {
        "train.py": "x", "model.pt": "weights", **{name: name for name in ODD},
        ".git/HEAD": "ref", "__pycache__/a.pyc": "", "pkg/__pycache__/b.pyc": "", "pkg/mod.pyc": "",
        ".venv/bin/python": "", "venv/x": "", "node_modules/m/i.js": "", "demo.egg-info/PKG-INFO": "",
        "runs/work/out.bin": "", "data/mnist.gz": "", "src/data/loader.py": "code", "src/runs.py": "code",
        ".gitignore": "*.log\nsecret/\n", "app.log": "", "secret/key": "", "keep.log": "",
        "sub/.gitignore": "*.tmp\n", "sub/a.tmp": "", "other.tmp": "",
        ".awsrunignore": "!keep.log\n!/data/\nbig/\n", "big/blob": "",
    })
    tree = sync.scan(root)
    assert sorted(tree.entries) == sorted([
        "train.py", "model.pt", *ODD, "src/data/loader.py", "src/runs.py", ".gitignore", "keep.log",
        "sub/.gitignore", "other.tmp", ".awsrunignore", "data/mnist.gz",
    ])
    info = (root / "train.py").stat()
    assert tree.entries["train.py"] == ["f", 1, info.st_mtime_ns, stat.S_IMODE(info.st_mode)]
    assert tree.warnings == []


def test_scan_never_follows_a_symlink_out_of_the_project(tmp_path):
    outside = _tree(tmp_path / "outside", {"secret.txt": "s", "dir/inner.txt": "i"})
    root = _tree(tmp_path / "p", {"lib/real.py": "r"})
    (root / "inside-rel").symlink_to("lib/real.py")
    (root / "inside-abs").symlink_to(root / "lib")
    (root / "to-file").symlink_to(outside / "secret.txt")
    (root / "to-dir").symlink_to(outside / "dir")
    (root / "climb").symlink_to("../outside/secret.txt")
    (root / "dangling").symlink_to("nowhere")
    os.mkfifo(root / "fifo")
    tree = sync.scan(root)
    assert {k: v for k, v in tree.entries.items() if v[0] == "l"} == {
        "inside-rel": ["l", "lib/real.py"], "inside-abs": ["l", "lib"]}
    assert "to-dir/inner.txt" not in tree.entries
    assert sorted(tree.warnings) == sorted([
        "not synced: symlink 'to-file' -> " + repr(str(outside / "secret.txt")) + " leads outside the project",
        "not synced: symlink 'to-dir' -> " + repr(str(outside / "dir")) + " leads outside the project",
        "not synced: symlink 'climb' -> '../outside/secret.txt' leads outside the project",
        "not synced: symlink 'dangling' -> 'nowhere' leads outside the project",
        "not synced: 'fifo' is not a regular file, directory or symlink",
    ])


def test_plan():
    local = {"same": ["f", 1, 5, 0o644], "changed": ["f", 2, 6, 0o644], "new": ["f", 1, 1, 0o644],
             "mode": ["f", 1, 5, 0o755], "link": ["l", "a"]}
    remote = {"same": ["f", 1, 5, 0o644], "changed": ["f", 2, 7, 0o644], "gone": ["f", 1, 1, 0o644],
              "mode": ["f", 1, 5, 0o644], "link": ["l", "b"]}
    assert sync.plan(local, remote) == sync.SyncPlan(["changed", "link", "mode", "new"], ["gone"], 1)


def _remote_state(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("l", os.readlink(path))
            else:
                info = path.stat()
                out[rel] = ("f", path.read_bytes(), info.st_mtime_ns, stat.S_IMODE(info.st_mode))
    return out


def _local_state(root: Path, tree: sync.LocalTree) -> dict[str, tuple]:
    out = {}
    for rel, entry in tree.entries.items():
        path = root / rel
        out[rel] = ("l", entry[1]) if entry[0] == "l" else ("f", path.read_bytes(), entry[2], entry[3])
    return out


def test_push_copies_exactly_then_only_what_changed_and_deletes_what_went(tmp_path):
    root = _tree(tmp_path / "p", {"a.py": "a", "pkg/b.py": "b" * 5000, "pkg/deep/c.py": "c", **{n: n for n in ODD}})
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o750)
    (root / "link").symlink_to("pkg/b.py")
    target = tmp_path / "machine" / "awsrun" / "p"
    remote = LocalRemote()

    first = sync.push(remote, sync.scan(root), str(target), PY)
    assert (first.files_sent, first.deleted, first.unchanged) == (len(ODD) + 5, 0, 0)
    assert first.bytes_raw == 1 + 5000 + 1 + sum(len(n.encode()) for n in ODD) + len("#!/bin/sh\n")
    assert _remote_state(target) == _local_state(root, sync.scan(root))  # bytes, mtime_ns, mode, links

    assert sync.push(remote, sync.scan(root), str(target), PY) == sync.SyncReport(0, 0, 0, 0, len(ODD) + 5, str(target))

    # results and caches the job made on the machine are not the project's to delete
    _tree(target, {"runs/work/model.pt": "w", "pkg/__pycache__/b.cpython.pyc": "", "data/set.bin": "d"})
    (root / "a.py").write_text("A2")
    (root / "pkg" / "deep" / "c.py").unlink()
    (root / "pkg" / "deep").rmdir()
    (root / "new file.py").write_text("n")
    third = sync.push(remote, sync.scan(root), str(target), PY)
    assert (third.files_sent, third.deleted, third.bytes_raw) == (2, 1, 3)
    assert (target / "a.py").read_text() == "A2" and (target / "new file.py").read_text() == "n"
    assert not (target / "pkg" / "deep").exists()  # emptied directories go too
    for kept in ("runs/work/model.pt", "pkg/__pycache__/b.cpython.pyc", "data/set.bin"):
        assert (target / kept).exists(), kept


def test_a_killed_transfer_leaves_whole_files_only_and_the_next_push_completes(tmp_path):
    root = _tree(tmp_path / "p", {f"f{i}.bin": os.urandom(50_000) for i in range(6)})
    target = tmp_path / "machine" / "p"
    remote = LocalRemote()
    tree = sync.scan(root)
    old = {f"f{i}.bin": b"old" for i in range(6)}
    _tree(target, old)
    data, _ = sync.payload(tree, sync.plan(tree.entries, {}))
    cut = remote.run(sync.apply_command(str(target), PY), stdin=data[: len(data) // 2])
    assert cut.exit_code != 0
    for name in old:
        assert (target / name).read_bytes() in (b"old", (root / name).read_bytes()), name
    assert [p.name for p in target.iterdir() if p.name.startswith(sync.TEMP_PREFIX)] == []
    report = sync.push(remote, sync.scan(root), str(target), PY)
    assert report.files_sent >= 1
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {p.name: p.read_bytes() for p in root.iterdir()}


def test_stale_temp_files_of_a_dead_transfer_are_cleared_and_never_listed(tmp_path):
    target = _tree(tmp_path / "m", {"a.py": "a", ".awsrun-tmp-1-1": "half", "sub/.awsrun-tmp-2-1": "half"})
    old = time.time() - 3600
    os.utime(target / ".awsrun-tmp-1-1", (old, old))
    result = LocalRemote().run(sync.manifest_command(str(target), PY), stdin=b"[[], [], []]")
    assert list(sync.parse_manifest(result.stdout, "local")) == ["a.py"]
    assert not (target / ".awsrun-tmp-1-1").exists()
    assert (target / "sub" / ".awsrun-tmp-2-1").exists()  # young: may belong to a transfer in progress


def test_a_directory_in_the_way_on_the_machine_is_reported_not_removed(tmp_path):
    root = _tree(tmp_path / "p", {"thing": "now a file"})
    target = _tree(tmp_path / "m", {"thing/precious.bin": "keep", ".gitignore-free": ""})
    tree = sync.scan(root)
    data, _ = sync.payload(tree, sync.SyncPlan(["thing"], [], 0))
    result = LocalRemote().run(sync.apply_command(str(target), PY), stdin=data)
    assert result.exit_code == 0
    assert sync.remote_warnings(result.stderr) == [
        "skipped 'thing': a directory of that name is in the way on the instance"]
    assert (target / "thing" / "precious.bin").read_text() == "keep"




def test_the_helpers_ignore_the_targets_python_environment(tmp_path):
    """A PYTHONPATH on the target holding a module named like one the helpers import changes nothing."""
    shadow = _tree(tmp_path / "shadow", {name: "raise SystemExit(99)\n" for name in ("json.py", "re.py", "tarfile.py")})
    root = _tree(tmp_path / "p", {"a.py": "a", "__pycache__/a.pyc": "c"})
    target = tmp_path / "m" / "p"
    tree = sync.scan(root)
    data, _ = sync.payload(tree, sync.plan(tree.entries, {}))
    hostile = f"PYTHONPATH={shlex.quote(str(shadow))} PYTHONSTARTUP={shlex.quote(str(shadow / 'json.py'))} "
    applied = LocalRemote().run(hostile + sync.apply_command(str(target), PY), stdin=data)
    assert applied.exit_code == 0, applied.stderr
    listed = LocalRemote().run(hostile + sync.manifest_command(str(target), PY), stdin=sync.manifest_input(tree))
    assert sync.parse_manifest(listed.stdout, "local") == tree.entries
