"""Faults, each on the harness with the real CLI: the SSH link cut in the middle of a submit (sync) and a
pull, a full disk on the instance, the state database locked by another awsrun or left corrupt.

What must hold: the command fails with one `error:` line (and one `hint:`), never a traceback; no
half-written file is left at either end; the re-run completes.

The link is cut by tests/harness/cutproxy.py, a ProxyCommand wrapper that kills the connection once N
bytes went one way (the first connection only, so the re-run passes), whatever SSH client awsrun uses.
"""
from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from awsrun.state import State
from tests.harness.clusters import (  # noqa: F401  (fixtures)
    local_cluster,
    ssh_cluster,
    wait_for,
)

CUTPROXY = Path(__file__).parent / "harness" / "cutproxy.py"
MB = 1_000_000

TRAIN = "print('trained')\n"
WRITER = """\
import os
out = os.environ['AWSRUN_OUTPUT_DIR']
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, 'weights.bin'), 'wb') as handle:
    handle.write(os.urandom(6_000_000))
print('wrote')
"""


def one_line_error(result) -> str:
    """The failure as the user sees it: exactly one `error:` line, at most a `hint:` after it."""
    assert result.exit_code != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, result
    tail = lines[errors[0] + 1:]
    assert tail == [] or (len(tail) == 1 and tail[0].startswith("  hint: ")), result
    assert result.exit_code != 70, result  # never awsrun's internal error
    return lines[errors[0]]


def cut_env(fleet, tmp_path: Path, **limits: int) -> dict[str, str]:
    """The harness ProxyCommand behind a cutter: the first connection dies after the given bytes."""
    words = [sys.executable, str(CUTPROXY)]
    for direction, limit in limits.items():
        words += [f"--{direction}", str(limit)]
    words += ["--once", str(tmp_path / "cut-done"), "--"]
    return {"AWSRUN_SSH_PROXY_COMMAND": shlex.join(words) + " " + fleet.proxy_command}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".awsrun-tmp-" in p.name] if root.exists() else []


def make_project(project: Path, size: int) -> bytes:
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "train.py").write_text(TRAIN)
    (project / "writer.py").write_text(WRITER)
    data = os.urandom(size)  # incompressible: the bytes on the wire are the file's
    (project / "big.bin").write_bytes(data)
    (project / "small.txt").write_text("small\n")
    return data


def test_submit_cut_mid_sync_leaves_no_half_file_and_the_rerun_completes(cli, project, ssh_cluster, fleet, tmp_path):
    data = make_project(project, 8 * MB)
    env = cut_env(fleet, tmp_path, up=3 * MB)
    failed = cli("submit", "train.py", env=env)
    line = one_line_error(failed)
    assert (tmp_path / "cut-done").exists(), "the link was never cut"
    assert failed.exit_code == 5, failed  # a RemoteError: the instance could not be reached any more
    assert any(word in line for word in ("connection", "SSH", "ssh")), line
    remote = ssh_cluster.project(project)
    # the instance's side notices the cut stream, removes its temp file and starts nothing
    wait_for(lambda: not temp_files(remote), timeout=30, what="the instance to remove its temp file")
    big = remote / "big.bin"
    assert not big.exists() or big.read_bytes() == data
    assert "work" not in ssh_cluster.sessions()
    assert not temp_files(project)

    again = cli("submit", "train.py", env=env)  # the cutter lets the second connection through
    assert again.exit_code == 0, again
    assert big.read_bytes() == data and (remote / "small.txt").read_text() == "small\n"
    assert not temp_files(remote)
    wait_for(lambda: (ssh_cluster.job("work") / "exit_code").exists(), timeout=30, what="the job to end")


def test_ctrl_c_while_submit_hangs_on_a_stalled_link_says_the_job_may_have_started(cli, project, ssh_cluster, fleet,
                                                                                   tmp_path):
    make_project(project, 8 * MB)
    env = cut_env(fleet, tmp_path, up=3 * MB)
    env["AWSRUN_SSH_PROXY_COMMAND"] = env["AWSRUN_SSH_PROXY_COMMAND"].replace(" --once ", " --stall 1 --once ", 1)
    cli.env.update(env)
    process = cli.popen("submit", "train.py", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "cut-done").exists(), timeout=60, what="the link to stall mid-sync")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "error: interrupted while submitting job 'work': it may have started" in stderr
    assert "hint: `awsrun jobs` shows whether it runs; `awsrun kill work` stops it" in stderr
    assert "work" not in ssh_cluster.sessions()  # here it had not: the link stalled before the launch


def test_pull_cut_mid_transfer_writes_nothing_and_the_rerun_completes(cli, project, ssh_cluster, fleet, tmp_path):
    make_project(project, 1000)
    assert cli("submit", "writer.py").exit_code == 0
    wait_for(lambda: (ssh_cluster.job("work") / "exit_code").exists(), timeout=60, what="the job to end")
    written = (ssh_cluster.project(project) / "runs" / "work" / "weights.bin").read_bytes()

    failed = cli("pull", "work", env=cut_env(fleet, tmp_path, down=3 * MB))
    one_line_error(failed)
    assert (tmp_path / "cut-done").exists(), "the link was never cut"
    local = project / "runs" / "work"
    assert not temp_files(project)
    assert not (local / "weights.bin").exists() or (local / "weights.bin").read_bytes() == written

    again = cli("pull", "work", env=cut_env(fleet, tmp_path, down=3 * MB))
    assert again.exit_code == 0, again
    assert (local / "weights.bin").exists(), (again, failed, list(local.rglob("*")))
    assert (local / "weights.bin").read_bytes() == written
    assert not temp_files(project)


# --- disk full on the instance ------------------------------------------------------------------------

def _in_host_namespace(host, *argv: str) -> subprocess.CompletedProcess:
    """Run argv in the mount namespace of the host's sshd, where its home is /home/ubuntu."""
    return subprocess.run(["nsenter", "-t", str(host.process.pid), "-m", "--", *argv],
                          capture_output=True, text=True)


@pytest.fixture
def small_disk(ssh_cluster, project):
    """A 1 MB tmpfs where the project lands on the instance: the disk that fills up."""
    host = ssh_cluster.host
    target = f"/home/ubuntu/awsrun/{ssh_cluster.project(project).name}"
    made = _in_host_namespace(host, "sh", "-c", f"mkdir -p {target} && chown -R ubuntu: /home/ubuntu/awsrun && "
                              f"mount -t tmpfs -o size=1m,mode=0755,uid=$(id -u ubuntu),gid=$(id -g ubuntu) "
                              f"awsrun-small-disk {target}")
    assert made.returncode == 0, made.stderr
    yield target
    _in_host_namespace(host, "umount", "-l", target)


@pytest.mark.parametrize("connection", ["first contact", "kept connection"])
def test_disk_full_during_sync_names_the_disk_and_its_free_space(cli, project, ssh_cluster, small_disk, connection):
    make_project(project, 3 * MB)
    if connection == "kept connection":  # the host key is pinned now: submit goes over the system ssh's master
        assert cli("jobs").exit_code == 0
    failed = cli("submit", "train.py")
    line = one_line_error(failed)
    assert "no space left" in line and small_disk in line, line
    assert "free of 1.0 MB" in line, line  # the disk's size, and what is left of it
    assert "work" not in ssh_cluster.sessions()
    listing = _in_host_namespace(ssh_cluster.host, "sh", "-c", f"find {small_disk} -name '.awsrun-tmp-*'")
    assert listing.returncode == 0 and listing.stdout == "", listing  # the partial file is gone

    (project / "big.bin").write_bytes(os.urandom(100_000))  # made to fit: the re-run completes
    again = cli("submit", "train.py")
    assert again.exit_code == 0, again


# --- the local state database --------------------------------------------------------------------------

def test_a_corrupt_state_db_is_one_line_naming_the_fix_and_the_fix_works(cli, awsrun_home):
    db = awsrun_home / "state.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a header, then garbage: a torn write
    (cli.cwd / "x.py").write_text("")
    for verb in (["status"], ["jobs"], ["submit", "x.py"], ["down", "--yes"]):
        result = cli(*verb)
        line = one_line_error(result)
        assert result.exit_code == 3 and str(db) in line, result
        assert f"mv {db} {db}.bad" in result.stderr and "awsrun status" in result.stderr, result
    os.rename(db, f"{db}.bad")  # what the hint says to do
    rebuilt = cli("up", "--local", "--no-bootstrap")
    assert rebuilt.exit_code == 0, rebuilt


def test_concurrent_awsrun_processes_serialise_on_the_state_db(cli, project, local_cluster, awsrun_home):
    """Another awsrun holds the database's write lock (a long transaction) while four submits run at once:
    they wait their turn, then all complete, and every job is recorded."""
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "train.py").write_text(TRAIN)
    holder = sqlite3.connect(awsrun_home / "state.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE clusters SET region='held'")
    processes = [cli.popen("submit", "--name", f"j{n}", "train.py", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for n in range(4)]
    time.sleep(1.0)
    assert all(p.poll() is None for p in processes)  # none can finish while the lock is held
    holder.execute("COMMIT")
    holder.close()
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    state = State.open(awsrun_home / "state.db")
    try:
        assert sorted(job.session for job in state.jobs("default")) == ["j0", "j1", "j2", "j3"]
        assert state.get_cluster("default").region == "held"  # the holder's write was kept too
    finally:
        state.close()
