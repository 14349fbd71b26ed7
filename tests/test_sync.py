"""awsrun.transfer.scan: the ignore rules (exact), the project scan, and the target's file list through the real
walker program (run by a local shell, as the local provider does). Pushing itself: test_transfer (rsync)
and test_sftp_push (without rsync)."""
from __future__ import annotations

import os
import shlex
import stat
import sys
import time
from pathlib import Path

import pytest

from awsrun.remote.local import LocalRemote
from awsrun.transfer import ignore, scan
from tests.harness.files import tree as _tree

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
    return scan.is_ignored(tiers, path, is_dir)


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
    tree = scan.scan(root)
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
    tree = scan.scan(root)
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


def test_stale_temp_files_of_a_dead_transfer_are_cleared_and_never_listed(tmp_path):
    target = _tree(tmp_path / "m", {"a.py": "a", ".awsrun-tmp-1-1": "half", "sub/.awsrun-tmp-2-1": "half"})
    old = time.time() - 3600
    os.utime(target / ".awsrun-tmp-1-1", (old, old))
    result = LocalRemote().run(scan.manifest_command(str(target), PY), stdin=b"[[], [], []]")
    assert list(scan.parse_manifest(result.stdout, "local")) == ["a.py"]
    assert not (target / ".awsrun-tmp-1-1").exists()
    assert (target / "sub" / ".awsrun-tmp-2-1").exists()  # young: may belong to a transfer in progress


def test_the_helpers_ignore_the_targets_python_environment(tmp_path):
    """A PYTHONPATH on the target holding a module named like one the helpers import changes nothing."""
    shadow = _tree(tmp_path / "shadow", {name: "raise SystemExit(99)\n" for name in ("json.py", "re.py", "os.py")})
    root = _tree(tmp_path / "p", {"a.py": "a", "__pycache__/a.pyc": "c"})
    tree = scan.scan(root)
    hostile = f"PYTHONPATH={shlex.quote(str(shadow))} PYTHONSTARTUP={shlex.quote(str(shadow / 'json.py'))} "
    listed = LocalRemote().run(hostile + scan.manifest_command(str(root), PY), stdin=scan.manifest_input(tree))
    assert listed.exit_code == 0, listed.stderr
    assert scan.parse_manifest(listed.stdout, "local") == tree.entries
