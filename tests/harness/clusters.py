"""Clusters for the job tests, recorded straight into awsrun's state (what `awsrun up --host` and
`awsrun up --local` record), so these tests do not depend on `up`.

    ssh:   node 0 is the first loopback sshd host; a fresh ed25519 key authorized on it.
    local: this machine; projects synced under the test's tmp dir (AWSRUN_REMOTE_DIR), jobs under
           AWSRUN_HOME/jobs, and a private tmux server (TMUX_TMPDIR), so parallel test runs never meet.

Import the fixtures into a test module: `from tests.harness.clusters import job_cluster, ...`.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from awsrun.job import tmux
from awsrun.state import ClusterRecord, InstanceRecord, State
from tests.harness.sshd import USER, SshHost

NAME = "default"


@dataclass
class JobCluster:
    provider: str                 # "ssh" or "local"
    remote_dir: Path              # settings.remote_dir where jobs run: projects land in remote_dir/<name>
    jobs_dir: Path                # job directories (see awsrun/job/tmux.py)
    tmux_env: dict[str, str]      # environment that reaches the cluster's tmux server
    host: SshHost | None = None
    key: Path | None = None
    name: str = NAME
    cleanup: list = field(default_factory=list)
    socket: str = tmux.SOCKET     # the cluster's tmux socket: on this machine, one per AWSRUN_HOME

    def project(self, project: Path) -> Path:
        """The synced copy of a local project on the machine (awsrun.job.projects.project_remote_dir's name)."""
        from awsrun.job.projects import project_remote_dir

        return self.remote_dir / Path(project_remote_dir("/", project)).name

    def job(self, session: str) -> Path:
        return self.jobs_dir / session

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        argv = ["env", *(f"{k}={v}" for k, v in self.tmux_env.items()), "tmux", "-L", self.socket, *args]
        if self.provider == "ssh":
            argv = ["runuser", "-u", USER, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True)

    def sessions(self) -> list[str]:
        result = self.tmux("list-sessions", "-F", "#{session_name}")
        return result.stdout.split() if result.returncode == 0 else []

    def drop_connections(self) -> int:
        """Kill every SSH connection to the host (the per-connection sshd processes): a laptop closing."""
        if self.host is None or self.host.process is None:
            return 0
        listener, killed = self.host.process.pid, 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == listener:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        return killed


def wait_for(condition, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """Poll until `condition()` is truthy (and return it), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _record(awsrun_home: Path, cluster: ClusterRecord, instance: InstanceRecord) -> None:
    state = State.open(awsrun_home / "state.db")
    try:
        state.put_cluster(cluster)
        state.put_instance(instance)
    finally:
        state.close()


def make_key(directory: Path) -> tuple[Path, str]:
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "awsrun-test", "-f", str(key)], check=True)
    return key, (directory / "id_ed25519.pub").read_text().strip()


def ssh_cluster_on(host: SshHost, fleet_base: Path, awsrun_home: Path, key_dir: Path) -> JobCluster:
    key_dir.mkdir(parents=True, exist_ok=True)
    key, public = make_key(key_dir)
    host.authorize(public)
    _record(awsrun_home, ClusterRecord(NAME, "ssh", config={"ssh_key": str(key)}),
            InstanceRecord(id=f"{host.address}:{host.port}", cluster=NAME, state="running", node=0,
                           extra={"host": host.address, "port": host.port, "user": USER}))
    return JobCluster("ssh", host.home / "awsrun", host.home / ".awsrun" / "jobs",
                      {"TMUX_TMPDIR": str(host.tmux_dir)}, host=host, key=key)


def local_cluster_in(tmp_path: Path, awsrun_home: Path) -> JobCluster:
    tmux_dir = Path(tempfile.mkdtemp(prefix="awt-", dir="/tmp"))  # short: tmux socket paths are limited
    machine = tmp_path / "machine"
    machine.mkdir()
    _record(awsrun_home, ClusterRecord(NAME, "local"), InstanceRecord("local", NAME, "running"))
    cluster = JobCluster("local", machine / "awsrun", awsrun_home / "jobs", {"TMUX_TMPDIR": str(tmux_dir)},
                         socket=tmux.home_socket(str(awsrun_home)))
    cluster.cleanup.append(lambda: shutil.rmtree(tmux_dir, ignore_errors=True))
    return cluster


def _env_for(cluster: JobCluster, fleet) -> dict[str, str]:
    if cluster.provider == "ssh":
        return {"AWSRUN_SSH_PROXY_COMMAND": fleet.proxy_command}
    return {"AWSRUN_REMOTE_DIR": str(cluster.remote_dir), "AWSRUN_VENV": str(cluster.remote_dir.parent / "no-venv"),
            **cluster.tmux_env}


@pytest.fixture
def ssh_cluster(fleet, awsrun_home, tmp_path, cli):
    cluster = ssh_cluster_on(fleet.hosts[0], fleet.base, awsrun_home, tmp_path / "keys")
    cli.env.update(_env_for(cluster, fleet))
    yield cluster
    cluster.tmux("kill-server")


@pytest.fixture
def local_cluster(awsrun_home, tmp_path, cli):
    cluster = local_cluster_in(tmp_path, awsrun_home)
    cli.env.update(_env_for(cluster, None))
    yield cluster
    cluster.tmux("kill-server")
    for step in cluster.cleanup:
        step()


@pytest.fixture(params=["ssh", "local"])
def job_cluster(request, awsrun_home, tmp_path, cli):
    """Each test using it runs twice: on a loopback SSH host, and on the local provider."""
    if request.param == "ssh":
        fleet = request.getfixturevalue("fleet")
        cluster = ssh_cluster_on(fleet.hosts[0], fleet.base, awsrun_home, tmp_path / "keys")
    else:
        fleet = None
        cluster = local_cluster_in(tmp_path, awsrun_home)
    cli.env.update(_env_for(cluster, fleet))
    yield cluster
    cluster.tmux("kill-server")
    for step in cluster.cleanup:
        step()
