"""The three ways the SFTP fallback reaches a target, as one fixture: the local provider (plain copies),
a loopback host over the system ssh's kept master (OpenSshRemote), and the same host over paramiko's own
connection (SshRemote, ssh_persist off)."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from awsrun.remote.local import LocalRemote
from tests.harness.clusters import _env_for, ssh_cluster_on


@dataclass
class Target:
    kind: str
    remote: object
    root: str           # the project's directory as awsrun names it there
    path: Path          # the same directory, seen from this test
    host: object = None

    def own(self) -> None:
        """Files the test made on a loopback host belong to its login user, as a job's would."""
        if self.host is not None:
            subprocess.run(["chown", "-R", "ubuntu:", str(self.host.home)], check=True)


def open_target(kind: str, request, tmp_path: Path, monkeypatch) -> Target:
    if kind == "local":
        path = tmp_path / "machine" / "p"
        return Target(kind, LocalRemote(), str(path), path)
    from awsrun.home import Home
    from awsrun.job import jobs
    from awsrun.settings import load_settings

    fleet, home, cli = (request.getfixturevalue(name) for name in ("fleet", "awsrun_home", "cli"))
    cluster = ssh_cluster_on(fleet.hosts[0], fleet.base, home, tmp_path / "keys")
    cli.env.update(_env_for(cluster, fleet))
    for name, value in _env_for(cluster, fleet).items():
        monkeypatch.setenv(name, value)
    assert cli("jobs").exit_code == 0  # the first contact pins the host key
    if kind == "paramiko":
        monkeypatch.setenv("AWSRUN_SSH_PERSIST", "off")
    host = jobs.open_host(Home(home), load_settings(tmp_path))
    request.addfinalizer(host.close)
    expected = {"openssh": "OpenSshRemote", "paramiko": "SshRemote"}[kind]
    assert type(host.remote).__name__ == expected
    return Target(kind, host.remote, "~/awsrun/p", cluster.host.home / "awsrun" / "p", cluster.host)


@pytest.fixture(params=["local", "openssh", "paramiko"])
def target(request, tmp_path, monkeypatch) -> Target:
    return open_target(request.param, request, tmp_path, monkeypatch)


@pytest.fixture(params=["local", "openssh"])
def target2(request, tmp_path, monkeypatch) -> Target:
    """The local provider and the everyday SSH path only (for the slower cases)."""
    return open_target(request.param, request, tmp_path, monkeypatch)
