"""`pull` trusts no remote byte: where it writes (pull_paths), then a real job that builds a hostile tree on
the machine and a real `awsrun pull` of it. The same without rsync: test_sftp_pull."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.clusters import job_cluster  # noqa: F401 (fixture)


def snapshot(root: Path, skip: Path) -> dict[str, bytes | str]:
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            seen[str(path)] = os.readlink(path) if path.is_symlink() else (path.read_bytes() if path.is_file() else "dir")
    return seen


def test_pull_destinations_stay_in_the_project_unless_asked_otherwise(tmp_path):
    from awsrun.errors import ConfigError
    from awsrun.job.jobs import pull_paths

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
