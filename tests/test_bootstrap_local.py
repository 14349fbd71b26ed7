"""infra/bootstrap.sh run directly on this machine as user ``ubuntu`` (no SSH).

One torch install for the whole module (shared venv): a run killed while pip
unpacks torch, the run that completes it, then a run that must skip everything.
The other checks use fakes on PATH (sudo, apt-get, dpkg-query, nvidia-smi) or
touch only the venv step, so they take seconds. Whole module: 1.5-3 min here,
mostly the torch install and deleting that venv afterwards.

Needs root (to become ``ubuntu`` with runuser), a CPU torch wheel for the system
python in /opt/wheels, and torch's dependencies from a local index
(/opt/pypi/simple) so pip stays off the network; otherwise the module skips.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "bootstrap.sh"
USER = "ubuntu"
WHEELS = Path("/opt/wheels")
LOCAL_INDEX = Path("/opt/pypi/simple")
TORCH_SPEC = "torch==2.13.0"
STEPS = ("packages", "driver", "venv", "torch", "requirements", "verify")


def _py_tag() -> str:
    out = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=False,
    )
    return out.stdout.strip()


def _prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run the script as user ubuntu"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return "no user ubuntu"
    if not shutil.which("runuser") or not Path("/usr/bin/python3").exists():
        return "needs runuser and /usr/bin/python3"
    if not glob.glob(str(WHEELS / f"torch-2.13.0+cpu-{_py_tag()}-*.whl")):
        return f"no CPU torch 2.13.0 wheel for {_py_tag()} in {WHEELS}"
    if not LOCAL_INDEX.is_dir():
        return f"no local package index at {LOCAL_INDEX} for torch's dependencies"
    return None


_why_not = _prerequisites()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

# Everything from local files: the torch wheel and a file:// index for its dependencies.
PIP_ARGS = f"--find-links {WHEELS} --index-url file://{LOCAL_INDEX}"


@dataclass
class Run:
    rc: int
    out: str
    seconds: float

    def lines(self) -> list[str]:
        return self.out.splitlines()

    def event(self, step: str) -> str:
        """The last protocol word for ``step``: start, skip, done or FAILED."""
        words = [line.split()[2] for line in self.lines() if line.startswith(f"==> {step} ")]
        return words[-1] if words else ""

    def __repr__(self) -> str:
        return f"Run(rc={self.rc}, seconds={self.seconds:.1f}, out=\n{self.out[-3000:]})"


class Host:
    """Runs bootstrap.sh as ubuntu with a clean environment, state under ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state = base / "state"

    def path(self, *parts: str) -> Path:
        return self.base.joinpath(*parts)

    def mkdir(self, name: str) -> Path:
        d = self.path(name)
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, USER, USER)
        return d

    def run(
        self,
        *args: str,
        state: Path | None = None,
        env: dict[str, str] | None = None,
        path_prefix: Path | None = None,
        kill_when: Callable[[str], bool] | None = None,
        kill_delay: float = 0.0,
        timeout: float = 240,
    ) -> Run:
        path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        if path_prefix:
            path = f"{path_prefix}:{path}"
        environment = {"HOME": f"/home/{USER}", "PATH": path, "LANG": "C.UTF-8", **(env or {})}
        argv = ["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in environment.items()),
                "bash", str(SCRIPT), "--state-dir", str(state or self.state), *args]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        collected: list[str] = []
        reader = threading.Thread(target=lambda: collected.extend(proc.stdout), daemon=True)
        reader.start()
        try:
            while proc.poll() is None:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"bootstrap ran over {timeout}s:\n{''.join(collected)}")
                if kill_when and kill_when("".join(collected)):
                    time.sleep(kill_delay)
                    os.killpg(proc.pid, signal.SIGKILL)
                    kill_when = None
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join(10)
        return Run(proc.returncode, "".join(collected), time.monotonic() - start)


@pytest.fixture(scope="module")
def host():
    base = Path(tempfile.mkdtemp(prefix="awsrun-bootstrap-", dir="/tmp"))
    os.chmod(base, 0o755)
    shutil.chown(base, USER, USER)
    yield Host(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def installed(host):
    """The one torch install: killed mid-install, completed, then re-run."""
    venv = host.path("venv")
    args = ("--venv", str(venv), "--torch-spec", TORCH_SPEC, "--pip-args", PIP_ARGS)

    def torch_unpacking(_out: str) -> bool:
        return bool(glob.glob(str(venv / "lib" / "python3*" / "site-packages" / "torch" / "__init__.py")))

    killed = host.run(*args, kill_when=torch_unpacking, kill_delay=0.3)
    completed = host.run(*args)
    again = host.run(*args)
    return {"args": args, "venv": venv, "killed": killed, "completed": completed, "again": again}


@pytest.fixture
def fakebin(host):
    """A directory of fake commands put first on PATH; each logs its argv to calls.log."""
    d = Path(tempfile.mkdtemp(prefix="fakebin-", dir=host.base))
    os.chmod(d, 0o755)
    log = d / "calls.log"
    log.touch()
    os.chmod(log, 0o666)

    def add(name: str, body: str) -> None:
        f = d / name
        f.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
        f.chmod(0o755)

    def calls() -> list[str]:
        return log.read_text().splitlines()

    return d, add, calls


@pytest.mark.slow
def test_a_run_killed_while_pip_unpacks_torch_resumes(installed):
    killed, completed = installed["killed"], installed["completed"]
    assert killed.rc == -signal.SIGKILL and killed.event("torch") == "start", killed
    assert completed.rc == 0, completed
    assert completed.event("venv") == "skip", completed
    assert completed.event("torch") == "done", completed


@pytest.mark.slow
def test_completed_run_reports_a_cpu_build(installed):
    run = installed["completed"]
    assert "AWSRUN_VERIFY torch=2.13.0+cpu cuda=False devices=0 name=cpu" in run.lines(), run
    assert "no GPU: CPU build" in run.lines(), run
    assert run.event("packages") == "skip" and run.event("driver") == "skip", run


@pytest.mark.slow
def test_second_run_skips_every_step_in_seconds(installed):
    run = installed["again"]
    assert run.rc == 0, run
    assert [run.event(s) for s in STEPS] == ["skip"] * 5 + ["done"], run
    assert "AWSRUN_VERIFY torch=2.13.0+cpu cuda=False devices=0 name=cpu" in run.lines(), run
    assert run.seconds < 15, run


@pytest.mark.slow
def test_finished_steps_never_call_sudo(host, installed, fakebin):
    bindir, add, calls = fakebin
    add("sudo", "exit 1")
    run = host.run(*installed["args"], path_prefix=bindir)
    assert run.rc == 0, run
    assert calls() == []


@pytest.mark.slow
def test_bad_torch_spec_fails_naming_the_step_with_the_log_tail(host, installed):
    run = host.run("--venv", str(installed["venv"]), "--torch-spec", "torch==99.0.0",
                   "--pip-args", f"--no-index --find-links {WHEELS}")
    assert run.rc != 0, run
    failed = [line for line in run.lines() if line.startswith("==> torch FAILED ")]
    assert failed and "exit=" in failed[0] and f"log={host.state}/logs/torch.log" in failed[0], run
    tail = run.out.split(failed[0], 1)[1]
    assert "torch==99.0.0" in tail, run
    assert run.event("verify") == "", run
    # The good install and its marker are untouched.
    assert host.run(*installed["args"]).event("torch") == "skip"


@pytest.mark.slow
def test_gpu_without_cuda_fails_verify(host, installed):
    run = host.run("--venv", str(installed["venv"]), "--only", "verify", env={"AWSRUN_ASSUME_GPU": "1"})
    assert run.rc == 4, run
    assert "torch.cuda.is_available() is False" in run.out, run


@pytest.mark.slow
def test_changed_requirements_file_redoes_the_step(host, installed):
    req = host.path("requirements.txt")
    req.write_text("filelock\n")  # already installed with torch: no download
    args = (*installed["args"], "--requirements", str(req))
    assert host.run(*args).event("requirements") == "done"
    assert host.run(*args).event("requirements") == "skip"
    req.write_text("filelock\nmpmath\n")
    assert host.run(*args).event("requirements") == "done"


def test_a_run_killed_while_creating_the_venv_resumes(host):
    venv = host.path("venv-killed")
    state = host.mkdir("state-venv")
    args = ("--venv", str(venv), "--only", "venv")
    killed = host.run(*args, state=state, kill_when=lambda out: "==> venv start" in out, kill_delay=0.5)
    assert killed.rc == -signal.SIGKILL, killed
    resumed = host.run(*args, state=state)
    assert resumed.rc == 0 and resumed.event("venv") == "done", resumed
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import pip"], check=False).returncode == 0
    assert host.run(*args, state=state).event("venv") == "skip"


def test_missing_package_is_installed_with_sudo(host, fakebin):
    bindir, add, calls = fakebin
    add("sudo", '[ "$1" = -n ] && shift\nexec "$@"')
    add("apt-get", "exit 0")
    add("dpkg-query", 'for a; do last=$a; done\n[ "$last" = tmux ] && exit 1\nprintf "install ok installed"')
    state = host.mkdir("state-packages")
    run = host.run("--only", "packages", state=state, path_prefix=bindir)
    assert run.rc == 0 and run.event("packages") == "done", run
    apt = [c for c in calls() if c.startswith("apt-get ")]
    assert any(c.endswith("update") for c in apt), calls()
    assert any("install --no-install-recommends tmux" in c for c in apt), calls()
    assert not any("upgrade" in c for c in apt), calls()
    assert host.run("--only", "packages", state=state).event("packages") == "skip"


def test_driver_install_asks_for_a_reboot_once_then_checks_it(host, fakebin):
    bindir, add, calls = fakebin
    add("sudo", '[ "$1" = -n ] && shift\nexec "$@"')
    add("apt-get", "exit 0")
    state = host.mkdir("state-driver")
    args = ("--only", "driver", "--driver-packages", "nvidia-headless-580-server-open,nvidia-utils-580-server")
    gpu = {"AWSRUN_ASSUME_GPU": "1"}

    first = host.run(*args, state=state, env=gpu, path_prefix=bindir)
    assert first.rc == 100 and "AWSRUN_REBOOT_REQUIRED" in first.lines(), first
    installs = [c for c in calls() if c.startswith("apt-get ") and " install " in c]
    assert len(installs) == 1 and "nvidia-headless-580-server-open nvidia-utils-580-server" in installs[0]

    # Not rebooted yet: ask again, install nothing.
    pending = host.run(*args, state=state, env=gpu, path_prefix=bindir)
    assert pending.rc == 100 and "AWSRUN_REBOOT_REQUIRED" in pending.lines(), pending
    assert len([c for c in calls() if c.startswith("apt-get ") and " install " in c]) == 1

    # "Rebooted" but the driver still does not load: fail with the diagnosis.
    (state / "driver.bootid").write_text("another-boot\n")
    broken = host.run(*args, state=state, env=gpu, path_prefix=bindir)
    assert broken.rc == 4 and broken.event("driver") == "FAILED", broken
    assert "nvidia-smi still fails" in broken.out, broken

    add("nvidia-smi", 'echo "GPU 0: Tesla T4 (UUID: GPU-0)"')
    working = host.run(*args, state=state, env=gpu, path_prefix=bindir)
    assert working.rc == 0 and working.event("driver") == "skip", working
    assert "nvidia-smi works" in working.out, working


def test_refused_sudo_fails_the_step_with_a_clear_message(host, fakebin):
    bindir, add, _ = fakebin
    add("sudo", "exit 1")
    add("dpkg-query", 'for a; do last=$a; done\n[ "$last" = rsync ] && exit 1\nprintf "install ok installed"')
    run = host.run("--only", "packages", state=host.mkdir("state-nosudo"), path_prefix=bindir)
    assert run.rc != 0 and run.event("packages") == "FAILED", run
    assert "'sudo -n' is refused" in run.out, run
