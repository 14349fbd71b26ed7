"""awsrun's OpenSSH calls forward nothing, whatever the user's ssh config says: with `ForwardAgent yes`
there, the instance would otherwise see the laptop's agent (and could use its keys anywhere). Tunnels
keep their -L forwards. Loopback sshd host, the system ssh, a real ssh-agent."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from awsrun.remote.target import SshTarget
from tests.harness.clusters import ssh_cluster  # noqa: F401 (fixture)


@pytest.fixture
def agent(tmp_path: Path):
    socket = tmp_path / "agent.sock"
    started = subprocess.run(["ssh-agent", "-a", str(socket)], capture_output=True, text=True, check=True)
    pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    yield socket
    os.kill(pid, 15)


@pytest.fixture
def forwarding_user_config(tmp_path: Path) -> dict[str, str]:
    """The system ssh, as awsrun finds it on PATH, reading a user config that forwards everything.
    (ssh reads ~/.ssh/config from the passwd entry, not $HOME: -F is how a test gives it one.)"""
    config = tmp_path / "user-ssh-config"
    config.write_text("Host *\n    ForwardAgent yes\n    ForwardX11 yes\n")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "ssh").write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {config} "$@"\n')
    (shim / "ssh").chmod(0o755)
    return {"PATH": f"{shim}:{os.environ['PATH']}"}


def test_the_instance_never_sees_the_laptops_agent(cli, ssh_cluster, agent, forwarding_user_config):
    env = {**forwarding_user_config, "SSH_AUTH_SOCK": str(agent)}
    probe = "echo agent=${SSH_AUTH_SOCK:-none}"
    first = cli("ssh", "--", probe, env=env)       # the command that starts the kept master
    again = cli("ssh", "--", probe, env=env)       # a session over that master
    assert first.exit_code == 0 and again.exit_code == 0, (first, again)
    assert first.stdout.strip() == again.stdout.strip() == "agent=none", (first, again)


def test_the_same_user_config_does_forward_the_agent_without_awsruns_options(ssh_cluster, agent,
                                                                              forwarding_user_config, fleet):
    """The check above can fail: plain ssh with that config hands the agent over."""
    env = {**os.environ, **forwarding_user_config, "SSH_AUTH_SOCK": str(agent)}
    argv = ["ssh", "-i", str(ssh_cluster.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", f"ProxyCommand={fleet.proxy_command}", "-p", str(ssh_cluster.host.port),
            f"ubuntu@{ssh_cluster.host.address}", "echo agent=${SSH_AUTH_SOCK:-none}"]
    plain = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain
    assert plain.stdout.strip() != "agent=none"


def test_tunnels_keep_their_forwards_and_still_forward_no_agent():
    from types import SimpleNamespace

    from awsrun.job.interactive import ssh_argv, tunnel_argv
    from awsrun.remote.openssh import OpenSshRemote

    target = SshTarget("10.0.0.1", "ubuntu", Path("k"), Path("kh"), "i-1")
    host = SimpleNamespace(remote=OpenSshRemote(target, None), local=False)
    tunnel = tunnel_argv(host, [(16006, 6006)])
    shell = ssh_argv(host, [], tty=True)
    for argv in (tunnel, shell, OpenSshRemote(target, None).argv("true")[0]):
        assert "ForwardAgent=no" in argv and "ForwardX11=no" in argv
    assert "ClearAllForwardings=yes" in shell and "ClearAllForwardings=yes" not in tunnel
    assert "127.0.0.1:16006:127.0.0.1:6006" in tunnel
