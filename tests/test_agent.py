"""The instance-side agent (infra/awsrun-agent.py) on a loopback host: idle auto-stop fires after the idle
period and never while a job runs; an interruption notice from IMDSv2 SIGTERMs the job and marks it."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from awsrun.job import tmux
from awsrun.remote.ssh import SshTarget, connect

AGENT = Path(__file__).resolve().parents[1] / "infra" / "awsrun-agent.py"


@pytest.fixture
def host_remote(fleet, tmp_path):
    host = fleet.hosts[0]
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    host.authorize((tmp_path / "id_ed25519.pub").read_text())
    target = SshTarget(host=host.address, port=host.port, user="ubuntu", key_path=key,
                       known_hosts=tmp_path / "known_hosts", alias=f"{host.address}:{host.port}")
    remote = connect(target, wait_s=10)
    remote.run("mkdir -p ~/.awsrun/agent").check()
    remote.put_bytes(AGENT.read_bytes(), "/home/ubuntu/.awsrun/agent/awsrun-agent.py", mode=0o755)
    yield remote
    remote.close()


def configure(remote, **config) -> None:
    remote.put_bytes(json.dumps(config).encode(), "/home/ubuntu/.awsrun/agent/config.json")


def agent(remote, verb: str) -> str:
    return remote.run(["python3", ".awsrun/agent/awsrun-agent.py", verb]).check().stdout


def wait_for(remote, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while remote.run(["test", "-e", path]).exit_code != 0:
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_autostop_fires_after_the_idle_period_and_not_while_a_job_runs(host_remote):
    configure(host_remote, idle_seconds=1, shutdown_command=["touch", "/home/ubuntu/shutdown-fired"],
              imds_url="http://127.0.0.1:9")
    host_remote.run(tmux.start_job("train", "~", ["sleep", "3"])).check()
    agent(host_remote, "tick")
    time.sleep(1.2)
    agent(host_remote, "tick")  # idle period passed, but a job runs: nothing fires
    status = json.loads(agent(host_remote, "status"))
    assert status["running_jobs"] == ["train"] and status["idle_since"] is None
    assert host_remote.run(["test", "-e", "shutdown-fired"]).exit_code == 1

    wait_for(host_remote, ".awsrun/jobs/train/exit_code")
    agent(host_remote, "tick")  # idle from now on
    status = json.loads(agent(host_remote, "status"))
    assert status["running_jobs"] == [] and status["fires_at"] == status["idle_since"] + 1
    assert host_remote.run(["test", "-e", "shutdown-fired"]).exit_code == 1
    time.sleep(1.2)
    agent(host_remote, "tick")
    assert host_remote.run(["test", "-e", "shutdown-fired"]).exit_code == 0
    assert json.loads(agent(host_remote, "status"))["fired_at"] is not None


def test_interruption_notice_sigterms_the_job_and_marks_it(host_remote, imds):
    configure(host_remote, imds_url=imds.url)
    script = ("import signal, sys, time\n"
              "def stop(*_):\n    print('checkpointed on SIGTERM', flush=True); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, stop)\nprint('training', flush=True)\ntime.sleep(120)\n")
    host_remote.run(tmux.start_job("train", "~", ["python3", "-c", script])).check()
    wait_for(host_remote, ".awsrun/jobs/train/pid")
    agent(host_remote, "tick")
    assert host_remote.run(["test", "-e", ".awsrun/jobs/train/interrupted"]).exit_code == 1  # no notice yet

    imds.notice = {"action": "stop", "time": "2026-11-27T12:00:00Z"}
    agent(host_remote, "tick")
    wait_for(host_remote, ".awsrun/jobs/train/exit_code")
    assert json.loads(host_remote.run(["cat", ".awsrun/jobs/train/interrupted"]).check().stdout)["action"] == "stop"
    assert "checkpointed on SIGTERM" in host_remote.run(["cat", ".awsrun/jobs/train/log"]).check().stdout


def fake_nvidia_smi(remote, *percents: int) -> None:
    """An nvidia-smi on the host's PATH for the agent (~/bin) that reports these GPU utilisations."""
    lines = "\\n".join(str(p) for p in percents)
    remote.run("mkdir -p ~/bin").check()
    remote.put_bytes(f"#!/bin/sh\nprintf '{lines}\\n'\n".encode(), "/home/ubuntu/bin/nvidia-smi", mode=0o755)


def tick_with_gpus(remote) -> None:
    remote.run('PATH="$HOME/bin:$PATH" python3 .awsrun/agent/awsrun-agent.py tick').check()


def test_gpu_idle_counts_a_job_whose_gpus_stay_below_the_threshold_as_idle(host_remote):
    configure(host_remote, idle_seconds=1, gpu_idle_percent=5, shutdown_command=["touch", "/home/ubuntu/shutdown-fired"],
              imds_url="http://127.0.0.1:9")
    host_remote.run(tmux.start_job("hung", "~", ["sleep", "60"])).check()
    fake_nvidia_smi(host_remote, 3, 40)  # one GPU busy: the job works
    tick_with_gpus(host_remote)
    time.sleep(1.2)
    tick_with_gpus(host_remote)
    status = json.loads(agent(host_remote, "status"))
    assert status["idle_since"] is None and status["gpu_utilisation"] == [3.0, 40.0]
    assert host_remote.run(["test", "-e", "shutdown-fired"]).exit_code == 1

    fake_nvidia_smi(host_remote, 2, 4)   # both under 5%: a hung loop, as idle as no job
    tick_with_gpus(host_remote)
    assert json.loads(agent(host_remote, "status"))["idle_since"] is not None
    fake_nvidia_smi(host_remote, 2, 9)   # busy again within the window: the idle clock starts over
    time.sleep(1.2)
    tick_with_gpus(host_remote)
    assert json.loads(agent(host_remote, "status"))["idle_since"] is None
    fake_nvidia_smi(host_remote, 0, 1)
    tick_with_gpus(host_remote)
    time.sleep(1.2)
    tick_with_gpus(host_remote)
    assert host_remote.run(["test", "-e", "shutdown-fired"]).exit_code == 0
    assert json.loads(agent(host_remote, "status"))["running_jobs"] == ["hung"]  # stopped with the job running


def test_gpu_idle_without_a_reading_keeps_the_job_busy(host_remote):
    configure(host_remote, idle_seconds=1, gpu_idle_percent=5, shutdown_command=["touch", "/home/ubuntu/shutdown-fired"],
              imds_url="http://127.0.0.1:9")
    host_remote.run(tmux.start_job("train", "~", ["sleep", "60"])).check()
    host_remote.run("mkdir -p ~/bin && printf '#!/bin/sh\\nexit 9\\n' > ~/bin/nvidia-smi && chmod +x ~/bin/nvidia-smi").check()
    tick_with_gpus(host_remote)
    time.sleep(1.2)
    tick_with_gpus(host_remote)
    assert host_remote.run(["test", "-e", "shutdown-fired"]).exit_code == 1
    assert json.loads(agent(host_remote, "status"))["gpu_utilisation"] is None
