"""Jobs end to end through the real CLI (a subprocess), on a loopback SSH host and on the local provider:
submit -> tmux on the machine -> logs / jobs / attach / pull / kill."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pexpect
import pytest

from tests.harness.clusters import job_cluster, local_cluster, ssh_cluster, wait_for  # noqa: F401 (fixtures)

# Waits for a `go` file in its working directory (the synced project), so the test decides when it
# ends; copies blob.bin of the project into its output directory.
TRAIN = """\
import os, shutil, sys, time
print("epochs", sys.argv[1:], flush=True)
while not os.path.exists("go"):
    time.sleep(0.05)
out = os.environ["AWSRUN_OUTPUT_DIR"]
shutil.copyfile("blob.bin", os.path.join(out, "result.bin"))
print("wrote", os.path.join(out, "result.bin"), flush=True)
print("done", flush=True)
"""

TICKER = """\
import itertools, os, time
for i in itertools.count():
    print("tick", i, flush=True)
    if os.path.exists("stop"):
        break
    time.sleep(0.2)
print("stopped", flush=True)
"""


def blob() -> bytes:
    return b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(4000))  # 128 KB


def make_project(project: Path, **scripts: str) -> Path:
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "jobs").mkdir(exist_ok=True)
    (project / "blob.bin").write_bytes(blob())
    for name, text in scripts.items():
        (project / "jobs" / f"{name}.py").write_text(text)
    return project


def jobs_table(cli) -> dict[str, list[str]]:
    result = cli("jobs")
    assert result.exit_code == 0, result
    rows = [line.split("\t") for line in result.stdout.splitlines() if line and not line.startswith("#")]
    assert rows[0] == ["session", "state", "started", "duration", "command"], result
    return {row[0]: row for row in rows[1:]}


def state_of(cli, session: str) -> str | None:
    row = jobs_table(cli).get(session)
    return row[1] if row else None


def test_submit_runs_in_tmux_outlives_connections_and_logs_jobs_pull_report_it(cli, project, job_cluster):
    make_project(project, train=TRAIN)
    submitted = cli("submit", "train.py", "--epochs", "2")  # found in jobs/, from the project root
    assert submitted.exit_code == 0, submitted
    assert "started job 'work'" in submitted.stderr
    assert job_cluster.sessions() == ["work"]
    assert state_of(cli, "work") == "running"
    job_cluster.drop_connections()  # no SSH connection is left (the CLI's own are gone already)

    (job_cluster.project(project) / "go").write_text("")
    wait_for(lambda: state_of(cli, "work") == "exited 0", what="the job to exit 0")
    row = jobs_table(cli)["work"]
    assert row[3].endswith("s") and row[4] == f"{Path(sys.executable).name if job_cluster.provider == 'local' else 'python3'} jobs/train.py --epochs 2"

    logs = cli("logs", "work")
    assert logs.exit_code == 0, logs
    assert logs.stdout.splitlines() == ["epochs ['--epochs', '2']", "wrote runs/work/result.bin", "done"]
    assert cli("logs", "work", "-n", "1").stdout == "done\n"

    pulled = cli("pull")
    assert pulled.exit_code == 0, pulled
    assert (project / "runs" / "work" / "result.bin").read_bytes() == blob()
    assert "pulled 1 file" in pulled.stderr
    again = cli("pull", "work")
    assert "pulled 0 files" in again.stderr and "1 unchanged" in again.stderr


def test_script_is_found_from_inside_jobs_and_runs_in_the_synced_project(cli, project, job_cluster):
    make_project(project, where="import os; print(os.getcwd()); print(os.environ['AWSRUN_OUTPUT_DIR'])")
    result = cli("submit", "--follow", "where.py", cwd=project / "jobs")
    assert result.exit_code == 0, result
    synced = job_cluster.project(project)
    expected = "/home/ubuntu/awsrun/project" if job_cluster.provider == "ssh" else str(synced)
    assert result.stdout.splitlines() == [expected, "runs/work"]
    assert (synced / "runs" / "work").is_dir()
