"""`pull` trusts no remote byte: whatever archive arrives, only regular files are written, and only under
the destination. First crafted archives against the unpacker, then a real job that builds a hostile
tree on the machine and a real `awsrun pull` of it."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from awsrun import sync
from awsrun.errors import RemoteError
from tests.harness.clusters import job_cluster  # noqa: F401 (fixture)


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


@pytest.fixture
def sandbox(tmp_path):
    """dest/ inside a directory whose every other entry must stay untouched."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_text("original")
    dest = tmp_path / "dest"
    dest.mkdir()
    return tmp_path, dest


def snapshot(root: Path, skip: Path) -> dict[str, bytes | str]:
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            seen[str(path)] = os.readlink(path) if path.is_symlink() else (path.read_bytes() if path.is_file() else "dir")
    return seen


@pytest.mark.parametrize("name, reason", [
    ("/tmp/evil", "it is an absolute path"),
    ("../evil", "it climbs out with '..'"),
    ("a/../../evil", "it climbs out with '..'"),
    ("a/../b", "it climbs out with '..'"),
    ("./x", "its name is not a plain relative path"),
    ("a//b", "its name is not a plain relative path"),
    ("new\nline", "its name holds a control character (newline, tab, ...)"),
    ("tab\there", "its name holds a control character (newline, tab, ...)"),
    ("esc\x1b[2J", "its name holds a control character (newline, tab, ...)"),
])
def test_hostile_names_are_refused_with_a_warning(sandbox, name, reason):
    root, dest = sandbox
    before = snapshot(root, dest)
    report = sync.unpack(archive((member(name), b"pwned"), (member("ok.txt"), b"fine")), dest)
    assert report.warnings == (f"not pulled: {name!r}: {reason}",)
    assert report.files == 1 and (dest / "ok.txt").read_bytes() == b"fine"
    assert sorted(p.name for p in dest.rglob("*")) == ["ok.txt"]
    assert snapshot(root, dest) == before


@pytest.mark.parametrize("kind, link, what", [
    (tarfile.SYMTYPE, "/etc/passwd", "symlink -> '/etc/passwd'"),
    (tarfile.SYMTYPE, "../../outside/victim.txt", "symlink -> '../../outside/victim.txt'"),
    (tarfile.SYMTYPE, "inner.txt", "symlink -> 'inner.txt'"),
    (tarfile.LNKTYPE, "/etc/passwd", "hard link -> '/etc/passwd'"),
    (tarfile.CHRTYPE, "", "device file"),
    (tarfile.BLKTYPE, "", "device file"),
    (tarfile.FIFOTYPE, "", "fifo"),
])
def test_links_devices_and_fifos_are_never_created(sandbox, kind, link, what):
    root, dest = sandbox
    before = snapshot(root, dest)
    report = sync.unpack(archive((member("x", kind, link), None)), dest)
    assert report.warnings == (f"not pulled: 'x': it is a {what}; pull copies regular files only",)
    assert list(dest.iterdir()) == []
    assert snapshot(root, dest) == before


def test_a_symlink_already_in_the_destination_is_never_written_through(sandbox):
    root, dest = sandbox
    (dest / "escape").symlink_to(root / "outside")
    (dest / "victim-link").symlink_to(root / "outside" / "victim.txt")
    report = sync.unpack(archive((member("escape/victim.txt"), b"pwned"), (member("escape/new.txt"), b"pwned"),
                                 (member("victim-link"), b"replaced")), dest)
    assert report.warnings == (
        "not pulled: 'escape/victim.txt': 'escape' on the way is a symlink or a file locally",
        "not pulled: 'escape/new.txt': 'escape' on the way is a symlink or a file locally",
    )
    assert (root / "outside" / "victim.txt").read_text() == "original"
    assert not (root / "outside" / "new.txt").exists()
    # a file named like an existing link replaces the link itself, never its target
    assert not (dest / "victim-link").is_symlink() and (dest / "victim-link").read_bytes() == b"replaced"


def test_modes_are_tamed_and_mtimes_kept(sandbox):
    _, dest = sandbox
    info = member("bin/tool", mode=0o6777)
    info.pax_headers = {sync.MTIME_KEY: "1234567890123456789"}
    sync.unpack(archive((info, b"#!/bin/sh\n")), dest)
    written = (dest / "bin" / "tool").stat()
    assert written.st_mode & 0o7777 == 0o755  # no setuid/setgid/sticky, no group/other write
    assert written.st_mtime_ns == 1234567890123456789


def test_garbage_instead_of_an_archive_is_an_error_not_a_crash(sandbox):
    _, dest = sandbox
    with pytest.raises(RemoteError, match="unreadable"):
        sync.unpack(b"not a tar at all", dest)
    whole = archive((member("a"), os.urandom(100_000)))
    with pytest.raises(RemoteError, match="damaged|unreadable"):
        sync.unpack(whole[: len(whole) // 2], dest)


def test_pull_destinations_stay_in_the_project_unless_asked_otherwise(tmp_path):
    from awsrun.errors import ConfigError
    from awsrun.jobs import pull_paths

    project = tmp_path / "proj"
    assert pull_paths(project, "~/awsrun/proj", "work") == ("~/awsrun/proj/runs/work", project / "runs" / "work")
    assert pull_paths(project, "~/awsrun/proj", "w", remote_path="out/a/") == ("~/awsrun/proj/out/a", project / "out" / "a")
    assert pull_paths(project, "~/awsrun/proj", "w", remote_path="/data/x/") == ("/data/x", project / "x")
    assert pull_paths(project, "~/awsrun/proj", "w", remote_path="~/results") == ("~/results", project / "results")
    assert pull_paths(project, "~/p", "w", remote_path="/", to=tmp_path / "t") == ("/", tmp_path / "t")
    for bad in ("../x", "a/../../b", "a\nb"):
        with pytest.raises(ConfigError):
            pull_paths(project, "~/p", "w", remote_path=bad)
    for nameless in ("~", "/"):
        with pytest.raises(ConfigError, match="no name to pull into") as refused:
            pull_paths(project, "~/p", "w", remote_path=nameless)
        assert refused.value.hint == "pass --to DIR"
    with pytest.raises(ConfigError):
        pull_paths(project, "~/p", "../x")


# The job builds, in its output directory, what a compromised instance could offer.
HOSTILE_TREE = """\
import os
out = os.environ["AWSRUN_OUTPUT_DIR"]
os.makedirs(os.path.join(out, "sub"))
open(os.path.join(out, "good.txt"), "w").write("good")
open(os.path.join(out, "sub", "deep.txt"), "w").write("deep")
open(os.path.join(out, "new\\nline.txt"), "w").write("newline")
os.symlink("/etc/passwd", os.path.join(out, "passwd"))
os.symlink("../../../../../../../../tmp", os.path.join(out, "up"))
os.symlink("good.txt", os.path.join(out, "inner"))
os.mkfifo(os.path.join(out, "pipe"))
print("built", flush=True)
"""


def test_pull_of_a_hostile_tree_built_by_a_job_writes_only_its_regular_files(cli, project, job_cluster, tmp_path):
    (project / "pyproject.toml").write_text("")
    (project / "hostile.py").write_text(HOSTILE_TREE)
    outside = snapshot(tmp_path, project)
    result = cli("submit", "--follow", "--name", "evil", "hostile.py")  # --follow pulls when the job ends
    assert result.exit_code == 0, result
    pulled = project / "runs" / "evil"
    assert sorted(p.relative_to(pulled).as_posix() for p in pulled.rglob("*")) == ["good.txt", "sub", "sub/deep.txt"]
    assert (pulled / "good.txt").read_text() == "good" and (pulled / "sub" / "deep.txt").read_text() == "deep"
    for warning in ("not pulled: 'inner': it is a symlink -> 'good.txt'",
                    "not pulled: 'new\\nline.txt': its name holds a control character",
                    "not pulled: 'passwd': it is a symlink -> '/etc/passwd'",
                    "not pulled: 'pipe': it is a fifo",
                    "not pulled: 'up': it is a symlink -> '../../../../../../../../tmp'"):
        assert f"warning: {warning}" in result.stderr, result.stderr
    again = cli("pull", "evil")
    assert again.exit_code == 0 and "pulled 0 files" in again.stderr
    after = {k: v for k, v in snapshot(tmp_path, project).items() if "awsrun-home" not in k and "machine" not in k
             and "keys" not in k}
    assert after == {k: v for k, v in outside.items() if "awsrun-home" not in k and "machine" not in k
                     and "keys" not in k}
