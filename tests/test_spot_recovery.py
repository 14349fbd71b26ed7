"""Spot interruption recovery on a loopback host with a torch venv (the `torch_host` fixture): the real
jobs/train_stn.py submitted with `awsrun submit`, an IMDSv2 interruption notice served by a local HTTP
endpoint, the agent's tick (the job is SIGTERMed and checkpoints), the host's tmux server killed as a
reboot would, then the agent's boot step: the job resumes from its checkpoint and finishes at the same step
as an uninterrupted run, each step logged once, repeating at most one checkpoint interval of work."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from awsrun.remote.ssh import SshTarget, connect
from awsrun.setup.agent import install_agent
from tests.harness.clusters import ssh_cluster_on, wait_for
from tests.harness.sshd import USER

REPO = Path(__file__).resolve().parents[1]
STEPS, CKPT_EVERY, LOG_EVERY = 80, 20, 10
JOB_ARGS = ("train_stn.py", "--dataset", "mnist5k", "--model", "fcn", "--steps", str(STEPS), "--batch-size", "32",
            "--log-every", str(LOG_EVERY), "--eval-every", str(STEPS), "--ckpt-every", str(CKPT_EVERY))


def _project(project: Path) -> None:
    (project / "pyproject.toml").write_text("[project]\nname = 'stn'\n")
    shutil.copytree(REPO / "jobs", project / "jobs", ignore=shutil.ignore_patterns("__pycache__", "runs", "data"))


def _agent(remote, verb: str) -> str:
    return remote.run(["python3", ".awsrun/agent/awsrun-agent.py", verb]).check(f"agent {verb}").stdout


def _train_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if r["kind"] == "train"]


def _checkpoint_steps(stopped: int) -> list[int]:
    """The checkpoints the log shows: every interval up to the SIGTERM one, then after resuming."""
    before = [s for s in range(CKPT_EVERY, stopped, CKPT_EVERY)] + [stopped]
    return before + [s for s in range(CKPT_EVERY, STEPS + 1, CKPT_EVERY) if s > stopped]


def test_interrupted_job_resumes_from_its_checkpoint_after_the_agents_boot_step(
        torch_host, fleet, awsrun_home, project, tmp_path, cli, imds, job_pythonpath):
    host = torch_host.host
    cluster = ssh_cluster_on(host, fleet.base, awsrun_home, tmp_path / "keys")
    cli.env["AWSRUN_SSH_PROXY_COMMAND"] = fleet.proxy_command
    _project(project)
    remote = connect(SshTarget(host=host.address, port=host.port, user=USER, key_path=cluster.key,
                               known_hosts=tmp_path / "known_hosts", alias=torch_host.alias), wait_s=10)
    try:
        # The agent as `up` installs it on a spot node (no autostop), pointed at the local metadata endpoint.
        install_agent(remote, idle_seconds=None)
        config = {"idle_seconds": None, "imds_url": imds.url, "shutdown_command": ["true"]}
        remote.put_bytes(json.dumps(config).encode(), f"/home/{USER}/.awsrun/agent/config.json")

        submitted = cli("submit", "--env", f"PYTHONPATH={job_pythonpath}", *JOB_ARGS)
        assert submitted.exit_code == 0, submitted
        job, run_dir = cluster.job("work"), cluster.project(project) / "runs" / "work"
        wait_for(lambda: list((run_dir / "checkpoints").glob("ckpt-*.pt")), timeout=60, what="a first checkpoint")

        imds.notice = {"action": "stop", "time": "2026-11-27T12:00:00Z"}
        _agent(remote, "tick")
        wait_for(lambda: (job / "exit_code").exists(), timeout=30, what="the job to stop on SIGTERM")
        assert json.loads((job / "interrupted").read_text())["action"] == "stop"
        log = (job / "log").read_text()
        stopped = int(re.search(r"stopped by SIGTERM at step (\d+)/", log).group(1))
        assert 0 < stopped < STEPS, log[-2000:]
        assert (run_dir / "checkpoints" / f"ckpt-{stopped:08d}.pt").exists()  # checkpointed where it stopped

        host.kill_jobs()  # the reboot: the tmux server and everything in it are gone
        imds.notice = None  # a restarted instance has no notice
        assert cluster.sessions() == []
        _agent(remote, "boot")
        wait_for(lambda: (job / "exit_code").exists(), timeout=60, what="the resumed job to finish")
        log = (job / "log").read_text()
        assert (job / "exit_code").read_text().strip() == "0", log[-3000:]
        assert (job / "restarts").read_text() == "1" and not (job / "interrupted").exists()
        resumed = int(re.search(r"resuming from \S+ckpt-\d+\.pt \(step (\d+)\)", log).group(1))
        assert stopped - resumed <= CKPT_EVERY and resumed == stopped  # SIGTERM checkpointed: nothing repeated

        # An uninterrupted run ends at --steps with one metrics row per log step; this one must too (that
        # a resumed run's weights equal an uninterrupted run's, bit for bit, is test_train_stn's to show).
        summary = json.loads((run_dir / "summary.json").read_text())
        assert (summary["steps"], summary["resumed_from_step"]) == (STEPS, resumed)
        rows = _train_steps(run_dir)
        assert rows == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), rows
        assert re.findall(r"checkpoint \S+ckpt-(\d+)\.pt", log) == [f"{s:08d}" for s in _checkpoint_steps(stopped)]
    finally:
        remote.close()
        host.kill_jobs()
