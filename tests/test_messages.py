"""Error messages and hints that name what applies: one `error:` line, an optional `hint:` naming commands
and options that exist for the command that failed, never a traceback. Through the real CLI where a user
meets them (the local provider, the moto endpoint with loopback sshd hosts), pure functions for parsing."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from awsrun.errors import ConfigError, NotFoundError
from awsrun.state import ClusterRecord, InstanceRecord, State
from tests.harness.cli import AwsrunCli
from tests.harness.clusters import local_cluster  # noqa: F401 (a fixture)
from tests.test_faults import one_line_error
from tests.test_jobs_e2e import TICKER

SSH_CIDR = "203.0.113.7/32"


def ok(result):
    assert result.exit_code == 0 and "Traceback" not in result.stderr, result
    return result


def failure(result) -> tuple[str, str]:
    """The failure as the user sees it (tests.test_faults.one_line_error checks its shape): its line and hint."""
    line = one_line_error(result)
    tail = result.stderr.splitlines()[result.stderr.splitlines().index(line) + 1:]
    return line, (tail[0].removeprefix("  hint: ") if tail else "")


# 1. `awsrun autostop` names its own options, `up` keeps naming its own --------------------------------
def test_autostop_errors_name_the_autostop_commands_own_options(cli):
    line, hint = failure(cli("autostop", "30m", "--gpu-idle", "150%"))
    assert line == "error: --gpu-idle '150%' is not a percentage above 0 and at most 100"
    assert hint == "e.g. --gpu-idle 5%"
    line, hint = failure(cli("autostop", "off", "--down"))
    assert line == "error: --down needs an autostop duration"
    assert "`awsrun autostop 30m --down`" in hint
    line, hint = failure(cli("autostop", "off", "--gpu-idle", "5%"))
    assert line == "error: --gpu-idle needs an autostop duration"
    assert "`awsrun autostop 1h --gpu-idle 5%`" in hint
    for shown in (line, hint):
        assert "--autostop-" not in shown
    help_text = ok(cli("autostop", "--help")).stdout
    assert "--gpu-idle" in help_text and "--down" in help_text


def test_up_keeps_naming_its_own_autostop_flags():
    from awsrun.cluster.autostop import for_up
    from awsrun.settings import Settings
    from awsrun.setup.agent import parse_percent

    with pytest.raises(ConfigError) as raised:
        parse_percent("150%")
    assert raised.value.message.startswith("--autostop-gpu-idle '150%'")
    assert raised.value.hint == "e.g. --autostop-gpu-idle 5%"
    with pytest.raises(ConfigError) as raised:
        for_up(Settings(), frozenset(), True, None)
    assert raised.value.message == "--autostop-down needs an autostop duration"


# 2. every spelling of zero is off ---------------------------------------------------------------------
@pytest.mark.parametrize("text", ["0", "0m", "0s", "0h", "0d", "0min", "0.0", "00", " 0 M "])
def test_every_spelling_of_zero_turns_autostop_off(text):
    from awsrun.setup.agent import parse_duration

    assert parse_duration(text) is None


def test_autostop_0m_means_off_like_autostop_0(cli):
    for zero in ("0", "0m", "0s", "0h"):
        line, _ = failure(cli("autostop", zero))  # no cluster here: the duration itself is accepted
        assert line == "error: no cluster named 'default' (known: none)", zero
    line, _ = failure(cli("autostop", "0m", "--down"))
    assert line == "error: --down needs an autostop duration"
    line, _ = failure(cli("autostop", "30s"))  # not zero, and too short: still refused
    assert "shorter than a minute" in line


# 3. `pull --from-s3` without a cluster ----------------------------------------------------------------
def test_pull_from_s3_names_an_unknown_cluster_like_every_other_verb(cli):
    line, hint = failure(cli("pull", "--from-s3"))
    assert line == "error: no cluster named 'default' (known: none)"
    assert "--cluster" in hint and "`awsrun status`" in hint
    assert line == failure(cli("pull"))[0]


def test_pull_from_s3_of_a_known_cluster_without_a_mirror_says_so(cli, local_cluster):
    line, _ = failure(cli("pull", "nosuch", "--from-s3"))
    assert line == "error: job 'nosuch' of cluster 'default' was not submitted with --checkpoint-bucket"


# 4. --node beyond the cluster's nodes -----------------------------------------------------------------
def test_node_beyond_the_cluster_says_how_many_nodes_it_has(cli, local_cluster):
    for args in (("logs", "--node", "3"), ("bootstrap", "--node", "5")):
        result = cli(*args)
        line, hint = failure(result)
        assert result.exit_code == 7
        assert line == f"error: cluster 'default' has no node {args[-1]}: it has 1 node"
        assert "--node counts from 0" in hint and "node 0 is its only one" in hint
        assert "awsrun up" not in hint


def test_node_hints_for_several_nodes_and_for_a_lost_node(tmp_path):
    from awsrun.cluster.access import head_node

    state = State.open(tmp_path / "state.db")
    try:
        cluster = ClusterRecord("big", "aws", "us-east-1")
        state.put_cluster(cluster)
        for node in range(3):
            state.put_instance(InstanceRecord(f"i-{node}", "big", "running", node=node))
        with pytest.raises(NotFoundError) as raised:
            head_node(state, cluster, 7)
        assert raised.value.message == "cluster 'big' has no node 7: it has 3 nodes"
        assert raised.value.hint.startswith("--node counts from 0 up to 2")
        state.put_instance(InstanceRecord("i-1", "big", "terminated", node=1))
        with pytest.raises(NotFoundError) as raised:
            head_node(state, cluster, 1)  # a node it had: `up` launches it again
        assert "`awsrun up --cluster big` starts them" in raised.value.hint
        with pytest.raises(NotFoundError) as raised:
            head_node(state, cluster, 4)
        assert raised.value.hint.startswith("--node takes one of 0, 2")
    finally:
        state.close()


# 5. a cluster adopted from another AWSRUN_HOME has no key ---------------------------------------------
def shutdown_behavior(ec2, instance_id: str) -> str:
    answer = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior")
    return answer["InstanceInitiatedShutdownBehavior"]["Value"]


def adopted_elsewhere(cli, ec2, tmp_path) -> tuple[AwsrunCli, str, str]:
    """Cluster 'adk' launched from the test's AWSRUN_HOME, adopted by `status` in a second one that has
    not its key: (that second CLI, the instance, the key pair's name)."""
    ok(cli("up", "--on-demand", "--ssh-cidr", SSH_CIDR, "--no-bootstrap", "--cluster", "adk"))
    other_home = tmp_path / "home-b"
    other_home.mkdir(mode=0o700)
    other = AwsrunCli(home=other_home, cwd=cli.cwd, env=dict(cli.env))
    (cluster,) = json.loads(ok(other("status", "--json")).stdout)["clusters"]
    key_name = next(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("awsrun-"))
    return other, cluster["instances"][0]["id"], key_name


def test_an_adopted_cluster_without_a_key_names_the_ways_to_give_one(cli, aws, ec2, fleet, tmp_path, awsrun_home):
    key = awsrun_home / "keys" / "awsrun_ed25519"
    other, _, key_name = adopted_elsewhere(cli, ec2, tmp_path)
    for verb in (("logs",), ("jobs",), ("pull",), ("attach", "x"), ("kill", "x"), ("bootstrap",), ("tunnel", "6006")):
        line, hint = failure(other(*verb, "--cluster", "adk"))
        assert line == "error: cluster 'adk' has no SSH key recorded", verb
        assert "pass --ssh-key" not in hint
        assert hint == (f"set AWSRUN_SSH_KEY=PATH (the private key of key pair {key_name}) for each command, or "
                        "record it once with `awsrun up --cluster adk --ssh-key PATH --no-bootstrap`")
    # what the hint says works: the setting for one command, `up --ssh-key` to record it
    ok(other("jobs", "--cluster", "adk", env={"AWSRUN_SSH_KEY": str(key)}))
    failure(other("jobs", "--cluster", "adk"))  # the setting was for that command only
    ok(other("up", "--cluster", "adk", "--ssh-key", str(key), "--no-bootstrap"))
    ok(other("jobs", "--cluster", "adk"))
    ok(cli("down", "--yes", "--cluster", "adk"))


def test_autostop_on_a_cluster_it_cannot_reach_changes_nothing(cli, aws, ec2, fleet, tmp_path, awsrun_home):
    other, instance_id, _ = adopted_elsewhere(cli, ec2, tmp_path)
    line, _ = failure(other("autostop", "30m", "--down", "--cluster", "adk"))
    assert line == "error: cluster 'adk' has no SSH key recorded"
    assert shutdown_behavior(ec2, instance_id) == "stop"  # not terminate: nothing was changed
    assert json.loads(ok(other("status", "--json")).stdout)["clusters"][0]["autostop"] is None
    key = str(awsrun_home / "keys" / "awsrun_ed25519")
    ok(other("autostop", "30m", "--down", "--cluster", "adk", env={"AWSRUN_SSH_KEY": key}))
    assert shutdown_behavior(ec2, instance_id) == "terminate"
    ok(cli("down", "--yes", "--cluster", "adk"))


# 6. attach without a terminal -------------------------------------------------------------------------


def test_attach_without_a_terminal_is_refused_with_the_way_to_follow_the_log(cli, project, local_cluster):
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "ticker.py").write_text(TICKER)
    ok(cli("submit", "--name", "tick", "ticker.py"))
    try:
        result = cli("attach", "tick", input="")  # stdin and stdout are pipes
        line, hint = failure(result)
        assert result.exit_code == 2
        assert line == "error: attach needs a terminal: its standard input and output must be a TTY"
        assert hint == "`awsrun logs -f tick` follows the job's output without one"
        assert "attaching to job" not in result.stderr and "open terminal failed" not in result.stderr
        assert "tick" in local_cluster.sessions()  # the job goes on
        missing = cli("attach", "nope", input="")  # a wrong name is still named as such
        assert failure(missing)[0] == "error: no job named 'nope' on cluster 'default'"
    finally:
        cli("kill", "--force", "tick")
    ended = cli("attach", "tick", input="")
    assert failure(ended)[0] == "error: job 'tick' is not running on cluster 'default': it was killed"


# 7. the time `up` really waited for SSH ---------------------------------------------------------------
def test_up_says_how_long_it_waited_for_ssh(cli, aws, ec2, fleet):
    silent = {"AWSRUN_SSH_TIMEOUT": "1", "AWSRUN_SSH_PROXY_COMMAND": "sh -c 'sleep 3' %h %p"}
    result = cli("up", "--on-demand", "--ssh-cidr", SSH_CIDR, "--no-bootstrap", env=silent)
    line, hint = failure(result)
    assert result.exit_code == 5
    stopped = float(re.search(r"waiting for SSH on i-\w+: stopped after ([\d.]+)s", result.stderr).group(1))
    gave_up = re.search(r"never became SSH-reachable: gave up after (\d+)s \(ssh_timeout 1s; ", line)
    assert gave_up, line
    assert stopped >= 3 and abs(int(gave_up.group(1)) - stopped) <= 1, (line, stopped)
    assert "get-console-output" in hint
    ok(cli("down", "--yes"))


# 8. `up --host` to a closed port ----------------------------------------------------------------------
def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the probe is


def test_up_host_on_a_closed_port_blames_the_address_not_the_key(cli):
    port = _closed_port()
    result = cli("up", "--host", f"ubuntu@127.0.0.1:{port}", "--no-bootstrap", "--cluster", "c8",
                 env={"AWSRUN_SSH_TIMEOUT": "1"})
    line, hint = failure(result)
    assert "Connection refused" in line
    assert "must accept this key" not in hint and "authorized_keys" not in hint
    assert f"sshd runs on 127.0.0.1 and listens on port {port}" in hint
    assert "`awsrun down --cluster c8`" in hint and "`awsrun up --cluster c8` tries again" in hint


def test_up_host_refusing_the_login_still_names_the_key(cli, fleet, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    host = fleet.hosts[0]
    result = cli("up", "--host", f"ubuntu@{host.address}:{host.port}", "--ssh-key", str(key), "--no-bootstrap",
                 "--cluster", "mine", env={"AWSRUN_SSH_TIMEOUT": "1"})
    line, hint = failure(result)
    assert "was refused" in line
    assert hint.startswith("the host must accept this key: add `ssh-ed25519 ")
    assert "authorized_keys" in hint and "`awsrun down --cluster mine`" in hint
    ok(cli("down", "--yes", "--cluster", "mine"))
