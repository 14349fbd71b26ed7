"""The instance disappears under a command (terminated in moto, its SSH connections dropped and its jobs
gone, as on EC2): the command ends at once with one line naming the instance and what EC2 says happened
(a user's terminate vs a spot reclaim, from the StateReason), and the local state no longer lists it."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from awsrun.cluster.vanished import describe_reason
from awsrun.state import State
from tests.harness.ec2_endpoint import ACCOUNT_ID
from tests.test_faults import one_line_error

SSH_CIDR = "203.0.113.7/32"
LOOP = """\
import time
while True:
    print('tick', flush=True)
    time.sleep(0.2)
"""


def up(cli, *args: str) -> str:
    result = cli("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap", *args)
    assert result.exit_code == 0, result
    state = State.open(cli.home / "state.db")
    try:
        (record,) = state.instances("default")
    finally:
        state.close()
    return record.id


def recorded_ids(cli) -> list[str]:
    state = State.open(cli.home / "state.db")
    try:
        return [r.id for r in state.instances("default")]
    finally:
        state.close()


def drop_connections(host) -> None:
    """Kill every process under the host's sshd listener (each connection's sshd and what it runs): the
    link is gone, and nothing on the instance answers on it any more."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    doomed, todo = [], list(children.get(host.process.pid, []))
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo += children.get(pid, [])
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def vanish(ec2, fleet, instance_id: str, reason: tuple[str, str] | None = None) -> None:
    """EC2 terminates the instance; its sshd connections drop, its jobs die, the address stops answering."""
    host = fleet.host_of(instance_id)
    ec2.terminate_instances(InstanceIds=[instance_id])
    if reason is not None:  # what EC2 records for a reclaim; moto only knows the user's terminate
        from moto.ec2.models import ec2_backends
        from moto.ec2.models.instances import StateReason

        instance = ec2_backends[ACCOUNT_ID]["us-east-1"].get_instance(instance_id)
        instance.state_reason = StateReason(*reason)
    bindings_path = fleet.base / "bindings.json"
    bindings = json.loads(bindings_path.read_text())
    del bindings["instances"][instance_id]  # the harness proxy asks EC2 again: a terminated one is unreachable
    bindings["ips"] = {ip: i for ip, i in bindings["ips"].items() if i != instance_id}
    bindings_path.write_text(json.dumps(bindings))
    drop_connections(host)
    host.kill_jobs()


def test_reasons_in_words():
    assert describe_reason("Server.SpotInstanceTermination: Spot instance termination") == \
        "EC2 reclaimed the spot capacity (a spot interruption) (Server.SpotInstanceTermination)"
    assert describe_reason("Client.UserInitiatedShutdown: User initiated shutdown") == \
        "a user terminated or stopped it (EC2 API or console) (Client.UserInitiatedShutdown)"
    assert describe_reason("Server.Something: new") == "Server.Something: new"
    assert describe_reason(None) == "EC2 gives no reason"


def test_the_cluster_is_read_with_the_commands_own_parser():
    from awsrun.cli import _cluster_flag

    assert _cluster_flag(["--debug", "submit", "--cluster", "a", "t.py", "--cluster", "script-arg"]) == "a"
    assert _cluster_flag(["logs", "-f", "work"]) is None
    assert _cluster_flag(["jobs", "--cluster=b"]) == "b"
    assert _cluster_flag([]) is None and _cluster_flag(["no-such-verb"]) is None


@pytest.mark.slow
def test_terminated_while_logs_follow_ends_with_the_reason_and_the_state_updated(cli, ec2, fleet, project):
    instance_id = up(cli)
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "loop.py").write_text(LOOP)
    assert cli("submit", "loop.py").exit_code == 0
    follower = cli.popen("logs", "-f", "work", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen, deadline = b"", time.monotonic() + 60
        while b"tick" not in seen:
            assert time.monotonic() < deadline and follower.poll() is None, seen
            if select.select([follower.stdout], [], [], 0.5)[0]:
                seen += os.read(follower.stdout.fileno(), 4096)
        vanish(ec2, fleet, instance_id)
        _, err = follower.communicate(timeout=60)  # no hang: the command ends by itself
    finally:
        if follower.poll() is None:
            follower.kill()
    from tests.harness.cli import CliResult

    result = CliResult(["logs", "-f", "work"], follower.returncode, "", err.decode())
    line = one_line_error(result)
    assert result.exit_code == 5, result
    assert line == (f"error: instance {instance_id} of cluster 'default' was terminated: a user terminated or "
                    "stopped it (EC2 API or console) (Client.UserInitiatedShutdown)"), result
    assert "`awsrun submit --recover --cluster default` launches a new one" in result.stderr
    assert recorded_ids(cli) == []


@pytest.mark.slow
def test_spot_reclaimed_before_submit_is_named_as_such(cli, ec2, fleet, project):
    instance_id = up(cli, "--spot")
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "loop.py").write_text(LOOP)
    vanish(ec2, fleet, instance_id, ("Server.SpotInstanceTermination: Spot instance termination",
                                     "Server.SpotInstanceTermination"))
    result = cli("submit", "loop.py", timeout=90)
    line = one_line_error(result)
    assert line == (f"error: instance {instance_id} of cluster 'default' was terminated: EC2 reclaimed the spot "
                    "capacity (a spot interruption) (Server.SpotInstanceTermination)"), result
    assert recorded_ids(cli) == []
    again = cli("submit", "loop.py")  # the state says so now: no SSH attempt, the way on is named
    line = one_line_error(again)
    assert "has no node 0" in line and "awsrun up --cluster default" in again.stderr, again


def test_an_instance_recorded_stopped_then_terminated_is_named_terminated_not_stopped(cli, ec2, fleet, project):
    """The state said stopped (awsrun stop); EC2 then ended it: commands must not send the user to `start`."""
    instance_id = up(cli)
    assert cli("stop").exit_code == 0
    vanish(ec2, fleet, instance_id)
    result = cli("logs")
    line = one_line_error(result)
    assert line == (f"error: instance {instance_id} of cluster 'default' was terminated: a user terminated or "
                    "stopped it (EC2 API or console) (Client.UserInitiatedShutdown)"), result
    assert "awsrun start" not in result.stderr
    assert recorded_ids(cli) == []
