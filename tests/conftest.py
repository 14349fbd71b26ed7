"""Fixtures of the hermetic harness. Nothing here is mocked: moto serves EC2 over HTTP, sshd serves
SSH on loopback addresses, tmux runs jobs. Every network connection of the tests stays on loopback."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.harness import ec2_endpoint
from tests.harness.cli import AWS_ENV, GUARD, AwsrunCli
from tests.stn_helpers import JOBS

os.environ["MOTO_AMIS_PATH"] = ec2_endpoint.amis_path()
for _name in list(os.environ):
    if _name.startswith("AWSRUN_"):
        del os.environ[_name]
os.environ.update(AWS_ENV)

import sys  # noqa: E402

sys.path.insert(0, str(GUARD))
sys.path.insert(0, str(JOBS))  # the job's own modules: train_stn, stn.*
import netguard  # noqa: E402

netguard.install()

REQUIRED_TOOLS = ("/usr/sbin/sshd", "ssh", "ssh-keygen", "tmux", "unshare", "runuser", "rsync")


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None and not Path(tool).exists()]
    if missing:
        raise pytest.UsageError(f"test harness needs {', '.join(missing)}: run `bash .ci/run` (it installs them)")


@pytest.fixture(scope="session")
def ec2_server():
    endpoint = ec2_endpoint.Ec2Endpoint.start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def aws(ec2_server, monkeypatch):
    """A clean EC2 endpoint for this test; boto3 in this process and in CLI subprocesses reach it."""
    ec2_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", ec2_server.url)
    return ec2_server


@pytest.fixture
def ec2(aws):
    import boto3

    return boto3.client("ec2", region_name="us-east-1", endpoint_url=aws.url)


@pytest.fixture(scope="session")
def _fleet():
    from tests.harness.fleet import Fleet

    base = Path(tempfile.mkdtemp(prefix="awsrun-fleet-"))
    fleet = Fleet.start(base, count=int(os.environ.get("AWSRUN_TEST_HOSTS", "3")))
    yield fleet
    fleet.stop()
    # The hosts' homes hold torch venvs: deleting them takes a minute on this disk, so it happens in the
    # background instead of holding up the end of the test session.
    subprocess.Popen(["rm", "-rf", str(base)], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def fleet(_fleet):
    """The loopback hosts, reset to freshly booted (venvs kept), with no instance bound to them."""
    _fleet.reset()
    yield _fleet
    for host in _fleet.hosts:
        host.kill_jobs()


@pytest.fixture
def awsrun_home(tmp_path: Path):
    home = tmp_path / "awsrun-home"
    home.mkdir(mode=0o700)
    yield home
    close_kept_connections(home)


def close_kept_connections(home: Path) -> None:
    """The SSH masters a test's commands kept open (awsrun.remote.openssh) end with the test."""
    from awsrun.remote.openssh import close_masters

    close_masters(home / "sockets", None)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def cli(awsrun_home: Path, project: Path, request) -> AwsrunCli:
    """The real awsrun CLI in a subprocess. With the `aws`/`fleet` fixtures it is wired to them."""
    env = {"AWSRUN_CALLER_IP_URL": "off"}
    if "aws" in request.fixturenames or "ec2" in request.fixturenames:
        env["AWS_ENDPOINT_URL"] = request.getfixturevalue("aws").url
    if "fleet" in request.fixturenames:
        env["AWSRUN_SSH_PROXY_COMMAND"] = request.getfixturevalue("fleet").proxy_command
    return AwsrunCli(home=awsrun_home, cwd=project, env=env)
from tests.harness.imds import imds  # noqa: E402,F401
from tests.harness.job_packages import job_pythonpath  # noqa: E402,F401
from tests.harness.torch_host import torch_host  # noqa: E402,F401
