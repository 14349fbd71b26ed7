"""A loopback host of the fleet with a bootstrapped torch venv, built once per test session.

The venv lives in the host's ~/venvs (kept across the per-test resets), so the first test that asks
for `torch_host` pays for the install (the real infra/bootstrap.sh over SSH, torch from the local
wheelhouse: ~30-60 s) and every later one reuses it. Deleting a torch venv costs as much again
(~20,000 files), so the session makes exactly one, and its making doubles as the resume test: the
first run is killed (its whole remote process group) half way through creating the venv, and the
second run, on the same connection, starts the venv over and completes. Both are kept for the tests.

    def test_x(torch_host, fleet, tmp_path):
        remote = torch_host.connect(tmp_path)          # authorizes our key (resets clear it)
        remote.run([torch_host.python, "-c", "import torch"])
"""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from awsrun.remote.ssh import SshRemote, SshTarget, connect
from awsrun.settings import Settings
from awsrun.setup.bootstrap import BootstrapError, bootstrap_node
from awsrun.setup.bootstrap_report import BootstrapReport
from tests.harness.sshd import USER, SshHost
from tests.harness.sshd import WHEELHOUSE as HOSTS_WHEELHOUSE

WHEELHOUSE = Path(HOSTS_WHEELHOUSE)
TORCH_VERSION = "2.13.0"
PIP_ARGS = f"--no-index --find-links {WHEELHOUSE}"
VENV = "~/venvs/awsrun"
WHEELHOUSE_COMMAND = (
    f"python3 -m pip download -q --only-binary=:all: "
    f"--python-version $(/usr/bin/python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])') "
    f"-d {WHEELHOUSE} torch=={TORCH_VERSION} && chmod -R a+rX {WHEELHOUSE}"
)


def settings(**overrides) -> Settings:
    """Bootstrap settings of the tests: offline pip from the wheelhouse, the default venv."""
    return Settings(**{"pip_args": PIP_ARGS, "venv": VENV, **overrides})


def require_wheelhouse() -> None:
    """Fail (never skip) when the CPU torch wheel for the hosts' Python is not in the wheelhouse."""
    tag = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if not glob.glob(str(WHEELHOUSE / f"torch-{TORCH_VERSION}*-{tag}-*.whl")):
        pytest.fail(f"no torch {TORCH_VERSION} wheel for {tag} in {WHEELHOUSE}; create it as root "
                    f"(`.ci/run` does): {WHEELHOUSE_COMMAND}", pytrace=False)


def make_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@dataclass(frozen=True)
class TorchHost:
    host: SshHost
    key: Path
    venv: str                      # as the host sees it
    local_venv: Path               # the same directory seen from this machine
    first_run: BootstrapReport     # the run that completed the first bootstrap
    first_lines: tuple[str, ...]
    killed: BootstrapError | None  # the run before it, killed in the venv step
    killed_lines: tuple[str, ...]
    left_incomplete: bool          # the killed run left the venv marked incomplete

    @property
    def python(self) -> str:
        return f"/home/{USER}/{self.venv.removeprefix('~/')}/bin/python"

    @property
    def alias(self) -> str:
        return f"{self.host.address}:{self.host.port}"

    def target(self, known_hosts_dir: Path) -> SshTarget:
        return SshTarget(host=self.host.address, port=self.host.port, user=USER, key_path=self.key,
                         known_hosts=known_hosts_dir / "known_hosts", alias=self.alias)

    def connect(self, known_hosts_dir: Path, wait_s: float = 10) -> SshRemote:
        """Authorize our key (a fleet reset clears authorized_keys) and connect."""
        self.host.authorize(self.key.with_suffix(".pub").read_text())
        return connect(self.target(known_hosts_dir), wait_s=wait_s)


class _KillInVenvStep:
    """on_line for a run to be killed (SIGKILL to its process group) once `python -m venv` is under way."""

    def __init__(self, venv_dir: Path):
        self.half_made = venv_dir / "bin" / "python"   # there while ensurepip still runs
        self.lines: list[str] = []
        self.pid: int | None = None

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("awsrun bootstrap ") and " pid=" in line:
            self.pid = int(line.split(" pid=")[1].split()[0])
        if line == "==> venv start" and self.pid is not None:
            deadline = time.monotonic() + 30
            while not self.half_made.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            group = os.getpgid(self.pid)
            assert group != os.getpgid(0), "the remote script shares our process group"
            os.killpg(group, signal.SIGKILL)


def _no_reconnect():
    pytest.fail("the connection was expected to stay up")


@pytest.fixture(scope="session")
def torch_host(_fleet, tmp_path_factory) -> TorchHost:
    require_wheelhouse()
    host = _fleet.hosts[-1]
    work = tmp_path_factory.mktemp("torch-host")
    key = make_key(work)
    host.authorize(key.with_suffix(".pub").read_text())
    target = SshTarget(host=host.address, port=host.port, user=USER, key_path=key,
                       known_hosts=work / "known_hosts", alias=f"{host.address}:{host.port}")
    venv_dir = host.home / VENV.removeprefix("~/")
    kill = _KillInVenvStep(venv_dir)
    lines: list[str] = []
    killed = None
    remote = connect(target, wait_s=10)
    try:
        try:
            bootstrap_node(remote, settings(), instance_type=None, log_path=work / "killed-run.log",
                           on_line=kill, reconnect=_no_reconnect)
        except BootstrapError as exc:
            killed = exc
        left_incomplete = (venv_dir / ".awsrun-incomplete").exists()
        report = bootstrap_node(remote, settings(), instance_type=None, log_path=work / "first-run.log",
                                on_line=lines.append, reconnect=_no_reconnect)
    finally:
        remote.close()
    return TorchHost(host=host, key=key, venv=VENV, local_venv=venv_dir, first_run=report,
                     first_lines=tuple(lines), killed=killed, killed_lines=tuple(kill.lines),
                     left_incomplete=left_incomplete)
