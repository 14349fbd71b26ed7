"""infra/bootstrap.sh run directly on this machine as user ``ubuntu`` (no SSH), for what the SSH tests
(tests/test_bootstrap_ssh.py: the real script, a real torch, a loopback host) cannot reach cheaply:
root-only steps and a GPU, through fakes first on PATH (sudo, apt-get, dpkg-query, nvidia-smi); a torch
install cut off before pip wrote its RECORD; a requirements file that changes.

No real torch here: a venv with a tiny fake ``torch`` wheel (the torch step only needs pip to install
something named torch==2.13.0+cpu) and torch's real small dependencies from the wheelhouse. Needs root
(to become ``ubuntu``, as the whole harness does): the module fails, never skips, without it.
"""
from __future__ import annotations

import base64
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.torch_host import WHEELHOUSE, require_wheelhouse

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "bootstrap.sh"
USER = "ubuntu"
TORCH_SPEC = "torch==2.13.0+cpu"


@pytest.fixture(scope="module", autouse=True)
def _can_run():
    problem = None
    if os.geteuid() != 0:
        problem = "needs root to run the script as user ubuntu (CI runs the tests as root: `bash .ci/run`)"
    elif not shutil.which("runuser") or not Path("/usr/bin/python3").exists():
        problem = "needs runuser and /usr/bin/python3"
    else:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            problem = "no user ubuntu (`.ci/run` creates it)"
    if problem:
        pytest.fail(problem, pytrace=False)


def fake_torch_wheel(directory: Path, version: str = "2.13.0+cpu", tag: str = "py3-none-any",
                     origin: str = "the test") -> Path:
    """A wheel named torch that installs in a second: torch/__init__.py and valid metadata."""
    files = {
        "torch/__init__.py": f'__version__ = "{version}"\nORIGIN = "{origin}"\n',
        f"torch-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
        f"torch-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: awsrun-tests\n"
                                            f"Root-Is-Purelib: true\nTag: {tag}\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"torch-{version}.dist-info/RECORD"] = "\n".join([*record, f"torch-{version}.dist-info/RECORD,,"]) + "\n"
    path = directory / f"torch-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


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
        # user ubuntu may not reach the checkout (CI clones into a 0700 temp dir): run a copy of the script
        self.script = base / "bootstrap.sh"
        shutil.copyfile(SCRIPT, self.script)
        self.script.chmod(0o755)

    def path(self, *parts: str) -> Path:
        return self.base.joinpath(*parts)

    def mkdir(self, name: str) -> Path:
        d = self.path(name)
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, USER, USER)
        return d

    def run(self, *args: str, state: Path | None = None, env: dict[str, str] | None = None,
            path_prefix: Path | None = None, timeout: float = 120) -> Run:
        path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        if path_prefix:
            path = f"{path_prefix}:{path}"
        # PIP_CONFIG_FILE=/dev/null: pip reads no configuration file (/etc/pip.conf, /etc/xdg/pip, ~/.config/pip),
        # so a machine's find-links holding a real torch never wins over the test's fake wheel
        environment = {"HOME": f"/home/{USER}", "PATH": path, "LANG": "C.UTF-8", "PIP_CONFIG_FILE": "/dev/null",
                       **(env or {})}
        argv = ["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in environment.items()),
                "bash", str(self.script), "--state-dir", str(state or self.state), *args]
        start = time.monotonic()
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, cwd=self.base)
        return Run(done.returncode, done.stdout, time.monotonic() - start)


@pytest.fixture(scope="module")
def host():
    base = Path(tempfile.mkdtemp(prefix="awsrun-bootstrap-", dir="/tmp"))
    os.chmod(base, 0o755)
    shutil.chown(base, USER, USER)
    yield Host(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def small_venv(host):
    """A real venv holding the fake torch. Its wheel directory also gets two small real wheels from the
    wheelhouse for the requirements (not the wheelhouse itself: pip would prefer its real torch)."""
    require_wheelhouse()
    wheels = host.mkdir("wheels")
    fake_torch_wheel(wheels)
    for name in ("filelock", "mpmath"):
        for wheel in WHEELHOUSE.glob(f"{name}-*.whl"):
            shutil.copy(wheel, wheels)
    venv = host.path("venv")
    args = ("--venv", str(venv), "--torch-spec", TORCH_SPEC, "--pip-args", f"--no-index --find-links {wheels}")
    made = host.run(*args, "--only", "venv", "--only", "torch")
    assert made.rc == 0 and made.event("torch") == "done", made
    return {"venv": venv, "args": args}


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


def test_a_torch_install_cut_off_before_its_record_is_redone(host, small_venv):
    # pip writes RECORD last, after byte-compiling torch's thousands of files: a kill in that window
    # leaves metadata that makes pip answer "already satisfied" and that pip cannot uninstall
    (record,) = small_venv["venv"].glob("lib/python3*/site-packages/torch-*.dist-info/RECORD")
    record.unlink()
    run = host.run(*small_venv["args"], "--only", "torch")
    assert run.rc == 0 and run.event("torch") == "done", run
    log = (host.state / "logs" / "torch.log").read_text()
    assert "an install that was cut off (no RECORD)" in log, log
    assert "Successfully installed torch-2.13.0+cpu" in log, log
    assert record.exists()
    assert host.run(*small_venv["args"], "--only", "torch").event("torch") == "skip"


def test_the_machines_pip_configuration_never_reaches_the_torch_step(host, small_venv):
    # a machine whose pip configuration has a find-links with a torch of the same version and a more
    # specific tag (a real wheel is cp3X-...-linux_x86_64): pip would prefer it over the test's fake one
    machine = host.mkdir("machine-wheels")
    fake_torch_wheel(machine, tag="py3-none-linux_x86_64", origin="the machine's pip configuration")
    config = host.mkdir("machine-config")
    (config / "pip").mkdir()
    (config / "pip" / "pip.conf").write_text(f"[global]\nfind-links = {machine}\n")
    shutil.chown(config / "pip", USER, USER)
    venv = host.path("venv-isolated")
    args = ("--venv", str(venv), *small_venv["args"][2:])
    run = host.run(*args, "--only", "venv", "--only", "torch", state=host.mkdir("state-isolated"),
                   env={"XDG_CONFIG_HOME": str(config), "XDG_CONFIG_DIRS": str(config)})
    assert run.rc == 0 and run.event("torch") == "done", run
    (installed,) = venv.glob("lib/python3*/site-packages/torch/__init__.py")
    assert 'ORIGIN = "the test"' in installed.read_text()


def test_changed_requirements_file_redoes_the_step(host, small_venv):
    req = host.path("requirements.txt")
    req.write_text("filelock\n")  # from the wheelhouse
    args = (*small_venv["args"], "--requirements", str(req), "--only", "requirements")
    first = host.run(*args)
    assert first.rc == 0 and first.event("requirements") == "done", first
    assert host.run(*args).event("requirements") == "skip"
    req.write_text("filelock\nmpmath\n")
    assert host.run(*args).event("requirements") == "done"
    # the torch build the torch step chose is kept: a requirement that needs another one fails
    req.write_text("torch==2.12.0\n")
    clash = host.run(*args)
    assert clash.rc != 0 and clash.event("requirements") == "FAILED", clash


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
