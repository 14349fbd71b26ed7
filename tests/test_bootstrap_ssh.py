"""The real infra/bootstrap.sh, driven by awsrun.setup.bootstrap over SSH, on the loopback `ubuntu` hosts.

torch comes from the local wheelhouse (tests/harness/torch_host.py; `.ci/run` builds it), so pip never
leaves the machine. The session makes one torch venv (a torch venv costs ~30-60 s to install and as
much to delete): the `torch_host` fixture's first bootstrap, which is killed in the venv step and then
resumed; the tests below read what those runs did, and rerun the bootstrap on the finished host.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from awsrun.setup.bootstrap import BootstrapError, bootstrap_node
from awsrun.setup.bootstrap_plan import packaged_script
from awsrun.setup.bootstrap_report import STEPS
from awsrun.state import ClusterRecord, InstanceRecord, State
from tests.harness.sshd import USER, SshHost
from tests.harness.torch_host import PIP_ARGS, settings

CPU_VERIFY = "AWSRUN_VERIFY torch=2.13.0+cpu cuda=False devices=0 name=cpu"


def events(lines, step: str) -> list[str]:
    """The protocol words (start/skip/done/FAILED) the script printed for `step`, in order."""
    return [line.split()[2] for line in lines if line.startswith(f"==> {step} ")]


def sudo_shim(host: SshHost, behaviour: str) -> Path:
    """A `sudo` first on the login PATH (bash reads ~/.bashrc for SSH commands) that records its
    arguments in ~/sudo-calls.log and then runs `behaviour` (never the real sudo)."""
    shim = host.home / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sudo").write_text(f'#!/bin/sh\necho "sudo $*" >> "$HOME/sudo-calls.log"\n{behaviour}\n')
    (shim / "sudo").chmod(0o755)
    (host.home / ".bashrc").write_text('export PATH="$HOME/shim:$PATH"\n')
    for path in (shim, shim / "sudo", host.home / ".bashrc"):
        os.chown(path, *_ubuntu_ids(host))
    return host.home / "sudo-calls.log"


def _ubuntu_ids(host: SshHost) -> tuple[int, int]:
    stat = host.home.stat()
    return stat.st_uid, stat.st_gid


def test_first_run_creates_the_venv_and_installs_a_cpu_torch(torch_host):
    report, lines = torch_host.first_run, torch_host.first_lines
    assert report.stack == "no GPU: CPU build"
    assert [report.outcome(s) for s in STEPS] == ["skip", "skip", "done", "done", "skip", "done"], lines
    assert events(lines, "venv") == ["start", "done"] and events(lines, "torch") == ["start", "done"], lines
    assert CPU_VERIFY in lines and "no GPU: CPU build" in lines, lines
    assert (report.verify.torch, report.verify.cuda, report.verify.devices, report.verify.name) == \
        ("2.13.0+cpu", False, 0, "cpu")
    assert report.reboots == 0 and report.reconnects == 0 and report.agent is None
    # the local log: our lines, the script's, and the steps' own logs copied back (pip's output)
    log = report.log_path.read_text()
    assert CPU_VERIFY in log and "/.awsrun/bootstrap/logs/torch.log ----" in log
    assert "Successfully installed" in log and "torch-2.13.0+cpu" in log
    assert (torch_host.local_venv / "bin" / "python").exists()


def test_a_run_killed_in_the_venv_step_resumes_and_completes(torch_host):
    killed = torch_host.killed
    assert killed is not None, torch_host.killed_lines
    assert killed.step == "venv" and killed.remote_exit == -1, killed.message
    assert killed.message.startswith("bootstrap was cut off during step 'venv' on "), killed.message
    assert "==> venv start" in killed.tail and "~/.awsrun/bootstrap/logs/venv.log" in killed.hint
    assert events(torch_host.killed_lines, "venv") == ["start"], torch_host.killed_lines
    assert events(torch_host.killed_lines, "torch") == [], torch_host.killed_lines
    assert torch_host.left_incomplete
    # the next run threw the half-made venv away, made it again, and went on to the end
    log = torch_host.first_run.log_path.read_text()
    assert "removing incomplete or replaced venv /home/ubuntu/venvs/awsrun" in log, log[-3000:]
    assert torch_host.first_run.outcome("verify") == "done"
    assert not (torch_host.local_venv / ".awsrun-incomplete").exists()


def test_a_bootstrapped_host_skips_every_step_without_sudo_then_gets_the_agent(torch_host, fleet, tmp_path):
    calls = sudo_shim(torch_host.host, "exit 0")   # records, agrees, does nothing
    lines: list[str] = []
    remote = torch_host.connect(tmp_path)
    try:
        report = bootstrap_node(remote, settings(autostop="30m"), instance_type=None,
                                log_path=tmp_path / "second.log", on_line=lines.append,
                                reconnect=lambda: pytest.fail("no reconnect expected"))
    finally:
        remote.close()
    for step in STEPS[:-1]:
        assert events(lines, step) == ["skip"], lines
    assert events(lines, "verify") == ["start", "done"], lines
    assert CPU_VERIFY in lines, lines
    assert report.acted == ("verify",)
    # settings.autostop: the agent is installed after the bootstrap, and reported
    config = json.loads((torch_host.host.home / ".awsrun" / "agent" / "config.json").read_text())
    assert config["idle_seconds"] == 1800 and report.agent is not None
    assert f"autostop agent: {report.agent.detail}" in lines
    # no step asked for root; only the agent's systemd units would (on a host with systemd)
    recorded = calls.read_text().splitlines() if calls.exists() else []
    assert [c for c in recorded if " install -m 0644 " not in c and " systemctl " not in c] == [], recorded
    if not Path("/run/systemd/system").exists():
        assert recorded == [] and not report.agent.scheduled


def test_a_bad_torch_spec_fails_naming_the_step_with_its_log_tail(torch_host, fleet, tmp_path):
    lines: list[str] = []
    remote = torch_host.connect(tmp_path)
    try:
        with pytest.raises(BootstrapError) as raised:
            bootstrap_node(remote, settings(torch_spec="torch==99.0.0"), instance_type=None,
                           log_path=tmp_path / "bad.log", on_line=lines.append,
                           reconnect=lambda: pytest.fail("no reconnect expected"))
        error = raised.value
        assert error.step == "torch" and error.remote_exit not in (0, None)
        assert error.message.startswith(f"bootstrap step 'torch' failed (exit {error.remote_exit}) on ")
        assert "torch==99.0.0" in "\n".join(error.tail), error.tail   # pip's complaint, from the step log
        assert "torch==99.0.0" in error.message.split("\n", 1)[1]
        assert str(tmp_path / "bad.log") in error.hint and "~/.awsrun/bootstrap/logs/torch.log" in error.hint
        log = (tmp_path / "bad.log").read_text()
        assert "---- /home/ubuntu/.awsrun/bootstrap/logs/torch.log ----" in log
        assert "ERROR: " in log.split("logs/torch.log ----", 1)[1], log   # pip's refusal, copied back
        assert events(lines, "verify") == [], lines
        # the installed torch was left alone
        check = remote.run([torch_host.python, "-c", "import torch; print(torch.__version__)"]).check()
        assert check.stdout.strip() == "2.13.0+cpu"
    finally:
        remote.close()


def test_verify_fails_loudly_when_a_gpu_is_present_but_torch_sees_no_cuda(torch_host, fleet, tmp_path):
    remote = torch_host.connect(tmp_path)
    try:
        remote.run(["mkdir", "-p", ".awsrun/bootstrap"]).check()
        remote.put_bytes(packaged_script(), "/home/ubuntu/.awsrun/bootstrap/bootstrap.sh", mode=0o755)
        # AWSRUN_ASSUME_GPU=1: the script's own switch for "an NVIDIA GPU is on the PCI bus"
        result = remote.run("AWSRUN_ASSUME_GPU=1 bash ~/.awsrun/bootstrap/bootstrap.sh --only verify "
                            f"--venv {torch_host.venv}")
    finally:
        remote.close()
    lines = result.stdout.splitlines()
    assert result.exit_code == 4 and events(lines, "verify") == ["start", "FAILED"], result
    assert "torch.cuda.is_available() is False" in result.stdout, result
    assert "(torch 2.13.0+cpu, built for CUDA None)" in result.stdout, result


def test_a_dropped_connection_is_reopened_and_the_run_resumed(torch_host, fleet, tmp_path):
    lines: list[str] = []
    first = torch_host.connect(tmp_path)
    opened = []

    def drop_in_verify(line: str) -> None:
        lines.append(line)
        if line == "==> verify start" and not opened:
            first.close()  # the script goes on without us, its output unread

    def reconnect():
        opened.append(torch_host.connect(tmp_path))
        return opened[-1]

    try:
        report = bootstrap_node(first, settings(), instance_type=None, log_path=tmp_path / "dropped.log",
                                on_line=drop_in_verify, reconnect=reconnect)
    finally:
        first.close()
    assert report.reconnects == 1 and len(opened) == 1, lines
    assert [(s.name, s.outcome, s.run) for s in report.steps if s.name == "verify"] == \
        [("verify", "cut off", 1), ("verify", "done", 2)], report.steps
    assert report.verify is not None and report.verify.torch == "2.13.0+cpu", lines
    assert lines.count("==> packages skip all present (python3-venv python3-pip tmux rsync)") == 2, lines
    assert "connection to {} lost: reconnecting".format(torch_host.alias) in lines, lines


def _register_ssh_cluster(home: Path, name: str, host: SshHost, key: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    state = State.open(home / "state.db")
    try:
        state.put_cluster(ClusterRecord(name, "ssh", config={"ssh_key": str(key)}))
        state.put_instance(InstanceRecord(
            id=f"{host.address}:{host.port}", cluster=name, state="running",
            extra={"host": host.address, "port": host.port, "user": USER},
        ))
    finally:
        state.close()


def test_cli_bootstrap_on_an_ssh_cluster_shows_progress_and_forces_a_step(torch_host, fleet, cli, tmp_path):
    _register_ssh_cluster(cli.home, "box", torch_host.host, torch_host.key)
    torch_host.host.authorize(torch_host.key.with_suffix(".pub").read_text())
    calls = sudo_shim(torch_host.host, "exit 0")   # agrees to everything, does nothing
    result = cli("bootstrap", "--cluster", "box", "--force-step", "packages",
                 env={"AWSRUN_PIP_ARGS": PIP_ARGS, "AWSRUN_AUTOSTOP": "30m"})
    assert result.exit_code == 0, result
    # progress: the phase with the log's path, then one line per step
    log_path = cli.home / "logs" / "bootstrap-box-0.log"
    assert f"bootstrapping {torch_host.alias} (log: {log_path})" in result.stderr, result
    assert "packages: done" in result.stderr and "verify: done" in result.stderr, result
    for step in ("driver", "venv", "torch", "requirements"):
        assert f"{step}: skip" in result.stderr, result
    # the result: steps as a table, then torch's own report
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert ["step", "outcome", "seconds", "detail"] in rows, result
    assert [r[:2] for r in rows if r[0] in STEPS] == \
        [["packages", "done"]] + [[s, "skip"] for s in STEPS[1:-1]] + [["verify", "done"]], result
    assert "torch 2.13.0+cpu, CUDA no, 0 GPUs (cpu)" in result.stdout, result
    assert CPU_VERIFY in log_path.read_text()
    # the forced step asked for root (apt-get update; nothing missing to install), nothing else did
    assert calls.read_text().splitlines()[0] == "sudo -n true", calls.read_text()
    apt = calls.read_text().splitlines()[1:]
    assert len(apt) == 1 and " apt-get " in apt[0] and apt[0].endswith(" update"), apt
    # autostop stays the cluster's business: no agent on a machine awsrun did not launch
    assert not (torch_host.host.home / ".awsrun" / "agent").exists()


def test_cli_bootstrap_refuses_unknown_clusters_and_steps(cli):
    missing = cli("bootstrap", "--cluster", "nope")
    assert missing.exit_code == 7 and "no cluster named 'nope'" in missing.stderr, missing
    bad_step = cli("bootstrap", "--force-step", "everything")
    assert bad_step.exit_code == 2 and "everything" in bad_step.stderr, bad_step
