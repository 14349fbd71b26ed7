"""Pull without rsync (awsrun.transfer.sftp_pull) trusts no remote byte: over the local provider and both SSH layers,
only regular files with plain names are written, only under the destination, never through a symlink,
never more bytes than listed, never a partial file under its final name; a complete file is not fetched
again; --include/--exclude work as with rsync."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from awsrun.errors import NotFoundError
from awsrun.remote.local import FileAttrs, LocalFiles, LocalRemote
from awsrun.transfer import scan, sftp_pull, sftp_session
from tests.harness.files import tree
from tests.sftp_targets import target, target2  # noqa: F401 (fixtures)


def written(dest: Path) -> list[str]:
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))


def test_a_hostile_tree_gives_its_regular_files_only_and_a_warning_for_each_of_the_rest(target, tmp_path):
    out = tree(target.path, {"good.txt": "good", "sub/deep.txt": "deep", "new\nline.txt": "n", "tab\there/x": "t",
                             "esc\x1b[2J": "e"})
    os.symlink("/etc/passwd", out / "passwd")
    os.symlink("../../../../../../../../tmp", out / "up")
    os.symlink("good.txt", out / "inner")
    os.symlink("/etc", out / "sub" / "etc")
    os.mkfifo(out / "pipe")
    os.link(out / "good.txt", out / "hard.txt")  # another name of a file in the tree: a regular file
    target.own()
    (tmp_path / "outside").mkdir()
    dest = tmp_path / "dest"
    report = sftp_pull.pull(target.remote, target.root, dest)
    assert written(dest) == ["good.txt", "hard.txt", "sub", "sub/deep.txt"]
    assert (dest / "sub" / "deep.txt").read_text() == "deep" and (dest / "hard.txt").read_text() == "good"
    assert sorted(report.warnings) == sorted([
        "not pulled: 'esc\\x1b[2J': its name holds a control character (newline, tab, ...)",
        "not pulled: 'inner': it is a symlink -> 'good.txt'; pull copies regular files only",
        "not pulled: 'new\\nline.txt': its name holds a control character (newline, tab, ...)",
        "not pulled: 'passwd': it is a symlink -> '/etc/passwd'; pull copies regular files only",
        "not pulled: 'pipe': it is a fifo; pull copies regular files only",
        "not pulled: 'sub/etc': it is a symlink -> '/etc'; pull copies regular files only",
        "not pulled: 'tab\\there': its name holds a control character (newline, tab, ...)",
        "not pulled: 'up': it is a symlink -> '../../../../../../../../tmp'; pull copies regular files only",
    ])
    assert (report.files, report.unchanged) == (3, 0)
    again = sftp_pull.pull(target.remote, target.root, dest)
    assert (again.files, again.unchanged, again.bytes_received) == (0, 3, 0)  # complete files are not resent
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_symlink_already_in_the_destination_is_never_written_through(target, tmp_path):
    tree(target.path, {"escape/victim.txt": "pwned", "escape/new.txt": "pwned", "victim-link": "replaced"})
    target.own()
    outside = tree(tmp_path / "outside", {"victim.txt": "original"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "escape").symlink_to(outside)
    (dest / "victim-link").symlink_to(outside / "victim.txt")
    report = sftp_pull.pull(target.remote, target.root, dest)
    assert sorted(report.warnings) == [
        "not pulled: 'escape/new.txt': 'escape' on the way is a symlink or a file locally",
        "not pulled: 'escape/victim.txt': 'escape' on the way is a symlink or a file locally",
    ]
    assert (outside / "victim.txt").read_text() == "original" and not (outside / "new.txt").exists()
    # a file named like an existing link replaces the link itself, never its target
    assert not (dest / "victim-link").is_symlink() and (dest / "victim-link").read_text() == "replaced"


def test_modes_are_tamed_and_mtimes_kept(target, tmp_path):
    tool = tree(target.path, {"bin/tool": "#!/bin/sh\n"}) / "bin" / "tool"
    target.own()
    tool.chmod(0o6777)
    os.utime(tool, ns=(1_234_567_890_000_000_000, 1_234_567_890_000_000_000))
    sftp_pull.pull(target.remote, target.root, tmp_path / "dest")
    info = (tmp_path / "dest" / "bin" / "tool").stat()
    assert info.st_mode & 0o7777 == 0o755  # no setuid/setgid/sticky, no group/other write
    assert info.st_mtime_ns == 1_234_567_890_000_000_000


def test_a_local_directory_in_the_way_and_a_missing_source(target, tmp_path):
    tree(target.path, {"thing": "a file there", "ok": "ok"})
    target.own()
    dest = tree(tmp_path / "dest", {"thing/mine.txt": "mine"})
    report = sftp_pull.pull(target.remote, target.root, dest)
    assert report.warnings == ("not pulled: 'thing': a local directory of that name is in the way",)
    assert (dest / "thing" / "mine.txt").read_text() == "mine" and (dest / "ok").read_text() == "ok"
    with pytest.raises(NotFoundError, match="does not exist"):
        sftp_pull.pull(target.remote, target.root + "/nothing-here", dest)


def test_include_and_exclude_leave_the_rest_behind(target2, tmp_path):
    tree(target2.path, {"summary.json": "{}", "curves.png": "p", "checkpoints/c1.pt": "c", "sub/metrics.json": "[]",
                        "sub/checkpoints/c2.pt": "c"})
    target2.own()
    left = sftp_pull.pull(target2.remote, target2.root, tmp_path / "a", exclude=["checkpoints/"])
    assert written(tmp_path / "a") == ["curves.png", "sub", "sub/metrics.json", "summary.json"] and left.files == 3
    only = sftp_pull.pull(target2.remote, target2.root, tmp_path / "b", include=["*.json"])
    assert written(tmp_path / "b") == ["sub", "sub/metrics.json", "summary.json"] and only.files == 2
    top = sftp_pull.pull(target2.remote, target2.root, tmp_path / "c", exclude=["/checkpoints/", "*.png"])
    assert written(tmp_path / "c") == ["sub", "sub/checkpoints", "sub/checkpoints/c2.pt", "sub/metrics.json",
                                       "summary.json"] and top.files == 3


def test_an_interrupted_pull_leaves_no_partial_file_and_the_next_one_completes(target, tmp_path, monkeypatch):
    source = tree(target.path, {"a.txt": "a", "big.bin": os.urandom(3 << 20)})
    target.own()
    dest = tmp_path / "dest"
    added = sftp_session.Meter.add

    def ctrl_c_midway(meter, count):
        added(meter, count)
        if meter.done > 1 << 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(sftp_session.Meter, "add", ctrl_c_midway)
    with pytest.raises(KeyboardInterrupt):
        sftp_pull.pull(target.remote, target.root, dest)
    monkeypatch.setattr(sftp_session.Meter, "add", added)
    assert not (dest / "big.bin").exists() and not [p for p in dest.iterdir() if p.name.startswith(scan.TEMP_PREFIX)]
    report = sftp_pull.pull(target.remote, target.root, dest)
    assert (dest / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
    assert report.files + report.unchanged == 2 and (dest / "a.txt").read_text() == "a"


@pytest.mark.parametrize("change, size", [("grow", 5000), ("shrink", 10), ("vanish", 0)])
def test_a_file_that_changes_while_pulling_is_skipped_with_a_warning(tmp_path, monkeypatch, change, size):
    """A job still writing: listed at one size, another when read. Never more bytes than listed land."""
    source = tree(tmp_path / "src", {"log.txt": "x" * 100, "ok.txt": "fine"})
    opened = LocalFiles.open

    def changing(files, path, mode="rb"):
        if path.endswith("log.txt"):
            if change == "vanish":
                os.unlink(path)
            else:
                (source / "log.txt").write_bytes(b"y" * size)
        return opened(files, path, mode)

    monkeypatch.setattr(LocalFiles, "open", changing)
    report = sftp_pull.pull(LocalRemote(), str(source), tmp_path / "dest")
    reason = "it went away on the instance during the pull" if change == "vanish" else \
        "it changed size on the instance during the pull"
    assert report.warnings == (f"not pulled: 'log.txt': {reason}",)
    assert report.files == 1 and written(tmp_path / "dest") == ["ok.txt"]


def test_impossible_numbers_from_the_instance_are_per_file_warnings(tmp_path):
    class Lying(LocalFiles):
        def listdir_attr(self, path):
            return [FileAttrs("ok.txt", 0o100644, 2, 1), FileAttrs("huge", 0o100644, 1 << 63, 1),
                    FileAttrs("negative", 0o100644, -1, 1), FileAttrs("far", 0o100644, 2, 1e30),
                    FileAttrs("nan", 0o100644, 2, float("nan")), FileAttrs("none", 0o100644, None, 1),
                    FileAttrs("dev", 0o020644, 0, 1)]

    entries, facts, warnings = sftp_pull.list_source(Lying(tmp_path), "x", [], False)
    assert [e.name for e in entries] == ["ok.txt", "dev"] and entries[1].kind == "c"
    assert warnings == [
        f"not pulled: 'huge': the instance gave it an impossible size ({1 << 63})",
        "not pulled: 'negative': the instance gave it an impossible size (-1)",
        "not pulled: 'far': the instance gave it an impossible mtime (1e+30)",
        "not pulled: 'nan': the instance gave it an impossible mtime (nan)",
        "not pulled: 'none': the instance gave it an impossible size (None)",
    ]


@pytest.mark.parametrize("holds, listed", [(100_000, 99_999), (100_000, 100_001), (100_000, 0),
                                           (1_000_000, 999_999), (1_000_000, 1_000_001)])
def test_a_file_not_the_size_it_was_listed_with_is_skipped_over_every_transport(target, tmp_path, monkeypatch, holds,
                                                                                 listed):
    """The job wrote between the listing and the read: whatever the file holds now, nothing lands (small
    files come in batches, big ones streamed: both ways)."""
    import dataclasses

    tree(target.path, {"log.bin": os.urandom(holds), "ok.txt": "fine"})
    target.own()
    listing = sftp_pull.list_source

    def stale(*args):
        entries, facts, warnings = listing(*args)
        return [dataclasses.replace(e, size=listed) if e.name == "log.bin" else e for e in entries], facts, warnings

    monkeypatch.setattr(sftp_pull, "list_source", stale)
    report = sftp_pull.pull(target.remote, target.root, tmp_path / "dest")
    assert report.warnings == ("not pulled: 'log.bin': it changed size on the instance during the pull",)
    assert report.files == 1 and written(tmp_path / "dest") == ["ok.txt"]
