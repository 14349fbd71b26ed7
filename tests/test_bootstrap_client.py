"""awsrun.setup.bootstrap without a host: the protocol parsers, the probe, the stack a node gets, the argv, and
the reboot / lost-connection loop against a scripted Remote (a real test host must never reboot)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from awsrun.cli.bootstrap import STEPS as CLI_STEPS
from awsrun.errors import ConfigError, RemoteError
from awsrun.remote.base import Result
from awsrun.settings import Settings
from awsrun.setup import bootstrap as bs
from awsrun.setup.bootstrap import BootstrapError, UnsupportedStackError, bootstrap_node
from awsrun.setup.bootstrap_plan import (
    Probe,
    bootstrap_argv,
    node_stack,
    parse_probe,
    probe_command,
)
from awsrun.setup.bootstrap_report import (
    STEPS,
    StepEvent,
    StepResult,
    VerifyResult,
    parse_event,
    parse_verify,
)
from awsrun.setup.stack import choose_stack

UBUNTU_2204 = 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\n'


def test_cli_and_core_agree_on_the_steps():
    assert CLI_STEPS == STEPS


@pytest.mark.parametrize("line, event", [
    ("==> venv start", StepEvent("venv", "start", "")),
    ("==> packages skip all present (python3-venv tmux)", StepEvent("packages", "skip", "all present (python3-venv tmux)")),
    ("==> torch done 51s", StepEvent("torch", "done", "51s")),
    ("==> torch FAILED exit=1 log=/home/u/.awsrun/bootstrap/logs/torch.log",
     StepEvent("torch", "FAILED", "exit=1 log=/home/u/.awsrun/bootstrap/logs/torch.log")),
    ("==> bogus start", None),
    ("  ==> venv start", None),
    ("Collecting torch", None),
])
def test_parse_event(line, event):
    assert parse_event(line) == event


def test_parse_verify_keeps_spaces_in_the_device_name():
    assert parse_verify("AWSRUN_VERIFY torch=2.13.0+cu130 cuda=True devices=4 name=NVIDIA A10G (MIG 1g)") == \
        VerifyResult("2.13.0+cu130", True, 4, "NVIDIA A10G (MIG 1g)")
    assert parse_verify("AWSRUN_VERIFY torch=x cuda=maybe devices=0 name=cpu") is None


PROBE_OUT = """home=/home/ubuntu
user=ubuntu
boot_id=b-1
requirements=yes
nvidia_on_pci=yes
[gpu]
Tesla T4, 7.5
[lspci]
00:1e.0 3D controller: NVIDIA Corporation TU104GL [Tesla T4] (rev a1)
[os-release]
ID=ubuntu
VERSION_ID="22.04"
"""


def test_parse_probe():
    probe = parse_probe(PROBE_OUT)
    assert probe == Probe(home="/home/ubuntu", user="ubuntu", boot_id="b-1", os_release='ID=ubuntu\nVERSION_ID="22.04"',
                          gpu=("Tesla T4", "7.5"), pci_gpus=("00:1e.0 3D controller: NVIDIA Corporation TU104GL [Tesla T4] (rev a1)",),
                          nvidia_on_pci=True, has_requirements=True)


def test_probe_command_quotes_the_requirements_path():
    command = probe_command("~/my proj/requirements.txt; rm -rf ~")
    assert "if [ -f \"$HOME\"/'my proj/requirements.txt; rm -rf ~' ]; then" in command
    assert "if [ -f '/abs path/r.txt' ]; then" in probe_command("/abs path/r.txt")


def _probe(**changes) -> Probe:
    base = dict(home="/home/ubuntu", user="ubuntu", boot_id="b", os_release=UBUNTU_2204, gpu=None, pci_gpus=(),
                nvidia_on_pci=False, has_requirements=False)
    return Probe(**{**base, **changes})


@pytest.mark.parametrize("instance_type, probe, expected", [
    # the catalog decides for EC2 types, whatever the probe saw
    ("p2.xlarge", _probe(), choose_stack("K80", "3.7", UBUNTU_2204)),
    ("g5.xlarge", _probe(), choose_stack("A10G", "8.6", UBUNTU_2204)),
    ("c6i.large", _probe(gpu=("Tesla T4", "7.5")), choose_stack(None, None, UBUNTU_2204)),
    # any other host: nvidia-smi, then lspci's name, then "some NVIDIA GPU", then none
    (None, _probe(gpu=("NVIDIA L4", "8.9")), choose_stack("NVIDIA L4", "8.9", UBUNTU_2204)),
    ("x9.unknown", _probe(pci_gpus=("00:1e.0 3D controller: NVIDIA Corporation GV100GL [Tesla V100 SXM2 16GB] (rev a1)",)),
     choose_stack("Tesla V100 SXM2 16GB", None, UBUNTU_2204)),
    (None, _probe(), choose_stack(None, None, UBUNTU_2204)),
])
def test_node_stack(instance_type, probe, expected):
    assert node_stack(instance_type, probe, None) == expected


def test_node_stack_cannot_name_a_gpu_seen_only_in_sysfs():
    stack = node_stack(None, _probe(nvidia_on_pci=True), None)
    assert not stack.supported and "unknown GPU model" in stack.reason


def test_bootstrap_argv_exact():
    stack = choose_stack("T4", "7.5", UBUNTU_2204)
    settings = Settings(venv="~/venvs/deepL", pip_args="--find-links /w --no-index")
    assert bootstrap_argv("/home/u/.awsrun/bootstrap/bootstrap.sh", settings, stack,
                          requirements="~/awsrun/requirements.txt", force_steps=("torch", "verify")) == [
        "bash", "/home/u/.awsrun/bootstrap/bootstrap.sh", "--venv", "~/venvs/deepL",
        "--torch-spec", "torch==2.13.0+cu130", "--torch-index-url", "https://download.pytorch.org/whl/cu130",
        "--pip-args", "--find-links /w --no-index", "--requirements", "~/awsrun/requirements.txt",
        "--driver-packages", "nvidia-headless-580-server-open nvidia-utils-580-server",
        "--force-step", "torch", "--force-step", "verify",
    ]
    cpu = choose_stack(None, None, UBUNTU_2204)
    assert bootstrap_argv("b.sh", Settings(), cpu) == [
        "bash", "b.sh", "--venv", "~/venvs/awsrun", "--torch-spec", "torch==2.13.0+cpu",
        "--torch-index-url", "https://download.pytorch.org/whl/cpu",
    ]


# ------------------------------------------------------------------- the loop, against a scripted Remote
OK_LINES = ["==> packages skip all present", "==> driver skip nvidia-smi works", "==> venv skip works",
            "==> torch skip ok", "==> requirements skip no --requirements given", "==> verify start",
            "AWSRUN_VERIFY torch=2.13.0+cu130 cuda=True devices=1 name=Tesla T4", "==> verify done 2s"]
REBOOT_LINES = ["==> packages skip all present", "==> driver start", "==> driver done 80s", "AWSRUN_REBOOT_REQUIRED"]


class Host:
    """The machine behind the scripted connections: its boot id changes when it reboots."""

    def __init__(self, runs: list[tuple[int, list[str]]], probe: str = PROBE_OUT, stale_after_reboot: int = 0):
        self.runs = list(runs)          # what each bootstrap.sh run prints and exits with
        self.probe = probe
        self.boot = 1
        self.stale_after_reboot = stale_after_reboot  # answers from the old boot while sshd shuts down
        self.stale = 0
        self.commands: list[str] = []
        self.files: dict[str, bytes] = {}


class ScriptedRemote:
    def __init__(self, host: Host, name: str = "i-0abc"):
        self.host, self.name, self.closed = host, name, False

    def run(self, command, *, stdin=None, on_line=None, timeout=None) -> Result:
        text = command if isinstance(command, str) else shlex.join(command)
        if self.closed:
            raise RemoteError(f"connection to {self.name} is closed")
        self.host.commands.append(text)
        if text.startswith("mkdir -p"):
            return Result(text, 0, self.host.probe.replace("boot_id=b-1", f"boot_id=b-{self.host.boot}"), "")
        if text.startswith("bash "):
            code, lines = self.host.runs.pop(0)
            for line in lines:
                on_line(line)
            return Result(text, code, "\n".join(lines) + "\n", "")
        if text == "sudo -n reboot":
            self.host.boot += 1
            self.host.stale = self.host.stale_after_reboot
            self.closed = True
            return Result(text, -1, "", "")
        if "boot_id" in text:
            if self.host.stale:
                self.host.stale -= 1
                return Result(text, 0, f"b-{self.host.boot - 1}\n", "")
            return Result(text, 0, f"b-{self.host.boot}\n", "")
        return Result(text, 0, "", "")

    def put_bytes(self, data, remote_path, mode=0o644):
        self.host.files[remote_path] = data

    def close(self):
        self.closed = True


def _run(host: Host, tmp_path: Path, **kwargs):
    lines: list[str] = []
    opened: list[ScriptedRemote] = []

    def reconnect():
        opened.append(ScriptedRemote(host))
        return opened[-1]

    report = bootstrap_node(ScriptedRemote(host), Settings(), instance_type="g4dn.xlarge",
                            log_path=tmp_path / "logs" / "b.log", on_line=lines.append, reconnect=reconnect, **kwargs)
    return report, lines, opened


def test_driver_install_reboots_reconnects_and_runs_again(tmp_path):
    host = Host([(100, REBOOT_LINES), (0, OK_LINES)])
    report, lines, opened = _run(host, tmp_path)
    assert report.reboots == 1 and len(opened) == 1 and opened[0].closed  # ours, closed at the end
    assert "sudo -n reboot" in host.commands
    assert [(s.name, s.outcome, s.run) for s in report.steps if s.name in ("driver", "verify")] == \
        [("driver", "done", 1), ("driver", "skip", 2), ("verify", "done", 2)]
    assert report.verify == VerifyResult("2.13.0+cu130", True, 1, "Tesla T4")
    assert "stack: T4 (sm_75): driver 580 (open kernel modules) + torch 2.13.0+cu130" in lines
    assert host.files["/home/ubuntu/.awsrun/bootstrap/bootstrap.sh"].startswith(b"#!/usr/bin/env bash")
    # the T4's driver packages went to the script; the requirements file the probe found too
    first_run = next(c for c in host.commands if c.startswith("bash "))
    assert "--driver-packages 'nvidia-headless-580-server-open nvidia-utils-580-server'" in first_run
    assert "--requirements '~/awsrun/requirements.txt'" in first_run


def test_a_forced_step_is_not_forced_again_after_the_reboot(tmp_path):
    host = Host([(100, REBOOT_LINES), (0, OK_LINES)])
    _run(host, tmp_path, force_steps=("driver",))
    runs = [c for c in host.commands if c.startswith("bash ")]
    assert "--force-step driver" in runs[0] and "--force-step" not in runs[1]


def test_reboots_are_bounded(tmp_path):
    host = Host([(100, REBOOT_LINES)] * 3)
    with pytest.raises(BootstrapError, match="still asks for a reboot after 2 reboots") as raised:
        _run(host, tmp_path)
    assert raised.value.step == "driver"


def test_a_reconnection_to_the_old_boot_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(bs, "REBOOT_POLL_S", 0.0)
    host = Host([(100, REBOOT_LINES), (0, OK_LINES)], stale_after_reboot=1)
    report, _, opened = _run(host, tmp_path)
    assert report.reboots == 1 and len(opened) == 2 and all(r.closed for r in opened)
    assert len([c for c in host.commands if c.startswith("bash ")]) == 2


def test_the_local_machine_is_never_rebooted(tmp_path):
    host = Host([(100, REBOOT_LINES)])
    remote = ScriptedRemote(host, name="local")
    with pytest.raises(BootstrapError, match="needs a reboot") as raised:
        bootstrap_node(remote, Settings(), instance_type="g4dn.xlarge", log_path=tmp_path / "b.log",
                       on_line=lambda line: None, reconnect=lambda: pytest.fail("no reconnect"))
    assert "reboot this machine" in raised.value.hint and "sudo -n reboot" not in host.commands


def test_a_lost_connection_reconnects_and_runs_again(tmp_path):
    class Dropping(ScriptedRemote):
        def run(self, command, **kwargs):
            if isinstance(command, list) and command[0] == "bash" and not self.host.files.get("dropped"):
                self.host.files["dropped"] = b"1"
                kwargs["on_line"]("==> venv start")
                self.closed = True
                return Result("bash", -1, "", "")
            return super().run(command, **kwargs)

    host = Host([(0, OK_LINES)])
    opened = []
    report = bootstrap_node(Dropping(host), Settings(), instance_type=None, log_path=tmp_path / "b.log",
                            on_line=lambda line: None,
                            reconnect=lambda: opened.append(ScriptedRemote(host)) or opened[-1])
    assert report.reconnects == 1 and report.steps[0] == StepResult("venv", "cut off", report.steps[0].seconds, "", 1)
    assert report.outcome("verify") == "done"
    assert "the step logs could not be copied" in (tmp_path / "b.log").read_text()


def test_failure_names_the_step_and_carries_the_tail(tmp_path):
    failed = ["==> venv skip works", "==> torch start", "==> torch FAILED exit=1 log=/h/.awsrun/bootstrap/logs/torch.log",
              "ERROR: Could not find a version that satisfies the requirement torch==99",
              "ERROR: No matching distribution found for torch==99"]
    host = Host([(1, failed)])
    with pytest.raises(BootstrapError) as raised:
        _run(host, tmp_path)
    error = raised.value
    assert error.step == "torch" and error.remote_exit == 1
    assert error.message.splitlines() == [
        "bootstrap step 'torch' failed (exit 1) on i-0abc; last lines:",
        "    ERROR: Could not find a version that satisfies the requirement torch==99",
        "    ERROR: No matching distribution found for torch==99",
    ]
    assert str(tmp_path / "logs" / "b.log") in error.hint and "~/.awsrun/bootstrap/logs/torch.log" in error.hint


def test_unsupported_stack_is_refused_before_anything_runs(tmp_path):
    unknown_gpu = PROBE_OUT.replace("Tesla T4, 7.5\n", "").replace(
        "TU104GL [Tesla T4] (rev a1)", "Device 2330 (rev a1)")
    host = Host([], probe=unknown_gpu)
    remote = ScriptedRemote(host)
    with pytest.raises(UnsupportedStackError, match="unknown GPU model") as raised:
        bootstrap_node(remote, Settings(), instance_type=None, log_path=tmp_path / "b.log", on_line=lambda _: None,
                       reconnect=lambda: remote)
    assert isinstance(raised.value, ConfigError) and "--instance-type" in raised.value.hint
    assert not host.files and not any(c.startswith("bash ") for c in host.commands)


def test_bad_settings_fail_before_connecting(tmp_path):
    host = Host([])
    with pytest.raises(ConfigError, match="unknown bootstrap step 'all'"):
        bootstrap_node(ScriptedRemote(host), Settings(), instance_type=None, log_path=tmp_path / "b.log",
                       on_line=lambda _: None, reconnect=lambda: None, force_steps=("all",))
    with pytest.raises(ConfigError, match="autostop"):
        bootstrap_node(ScriptedRemote(host), Settings(autostop="soon"), instance_type=None,
                       log_path=tmp_path / "b.log", on_line=lambda _: None, reconnect=lambda: None)
    assert host.commands == []


def test_the_screen_shows_step_lines_and_leaves_the_failure_tail_to_the_error():
    from awsrun.cli.bootstrap import _Screen

    class Phase:
        def __init__(self):
            self.shown = []

        def update(self, detail):
            self.shown.append(detail)

    phase = Phase()
    screen = _Screen(phase)
    for line in ["stack: no GPU: CPU build", "awsrun bootstrap 2026-01-01T00:00:00Z user=u pid=9 venv=v state=s",
                 "==> venv skip works", "waiting for another bootstrap run to finish (lock)", "==> torch start",
                 "==> torch FAILED exit=1 log=/l/torch.log", "ERROR: No matching distribution", ""]:
        screen(line)
    assert phase.shown == ["stack: no GPU: CPU build", "venv: skip works",
                           "waiting for another bootstrap run to finish (lock)", "torch: start",
                           "torch: failed exit=1 log=/l/torch.log"]
