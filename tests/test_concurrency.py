"""Two awsrun processes at once, as a busy user runs them: two `up`s of one cluster, two `submit --name S`,
two AWSRUN_HOMEs on one machine. The real CLI in subprocesses, against moto, loopback sshd hosts and tmux;
the races run several rounds."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.harness.clusters import job_cluster, local_cluster_in, wait_for  # noqa: F401 (a fixture)
from tests.test_up_e2e import SSH_CIDR, _start_paused, live, ok

ROUNDS = 3


def _up_argv(cli) -> list[str]:
    return cli.argv("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap")


def test_two_ups_at_once_launch_one_instance(cli, ec2, fleet):
    for round_ in range(ROUNDS):
        processes = [subprocess.Popen(_up_argv(cli), cwd=cli.cwd, env=cli.environment(), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        outcomes = [(p.wait(timeout=300), *p.communicate()) for p in processes]
        assert [code for code, _, _ in outcomes] == [0, 0], (round_, outcomes)
        assert len(live(ec2)) == 1, (round_, outcomes)
        ok(cli("down", "--yes"))


def test_a_second_up_waits_for_the_first_and_then_carries_on_with_its_launch(cli, ec2, fleet):
    first = _start_paused(cli, "before-launch")  # holds the cluster, its launch token recorded
    second = subprocess.Popen(_up_argv(cli), cwd=cli.cwd, env=cli.environment(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 60
    while b"waiting for it" not in seen:
        assert time.monotonic() < deadline and second.poll() is None, seen
        seen += os.read(second.stderr.fileno(), 65536)
    assert f"another `awsrun up` of cluster 'default' is running (pid {first.pid})".encode() in seen
    assert live(ec2) == []  # the second launched nothing while the first held the cluster
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert len(live(ec2)) == 1
    ok(cli("down", "--yes"))
