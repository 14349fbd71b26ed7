"""Autostop from the client: how `up` resolves the setting, `up --autostop 30m --autostop-down` against the
moto endpoint (the instance's shutdown behaviour, the setting on the cluster record, the agent's config on
the loopback host it runs on), `awsrun autostop` changing it on a live cluster, `status` showing it and,
with `--agent`, when it fires; clusters of machines awsrun did not launch are never given an autostop."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from awsrun.cluster import autostop
from awsrun.errors import ConfigError
from awsrun.progress import Silent
from awsrun.settings import Settings
from awsrun.setup.agent import Autostop
from awsrun.state import InstanceRecord
from tests.harness.sshd import USER

SSH_CIDR = "203.0.113.7/32"


def ok(result):
    assert result.exit_code == 0 and "Traceback" not in result.stderr, result
    return result


def shutdown_behavior(ec2, instance_id: str) -> str:
    answer = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior")
    return answer["InstanceInitiatedShutdownBehavior"]["Value"]


def agent_config(host) -> dict:
    return json.loads((host.home / ".awsrun" / "agent" / "config.json").read_text())


def run_agent(fleet, host, verb: str) -> dict | None:
    os.chmod(fleet.base, 0o711)  # mkdtemp made it 0700: `ubuntu` must reach its home below it
    done = subprocess.run(
        ["runuser", "-u", USER, "--", "env", f"HOME={host.home}", f"TMUX_TMPDIR={host.tmux_dir}", "/usr/bin/python3",
         str(host.home / ".awsrun" / "agent" / "awsrun-agent.py"), verb], capture_output=True, text=True, check=True)
    return json.loads(done.stdout) if verb == "status" else None


def status_json(cli, *args: str) -> dict:
    return json.loads(ok(cli("status", "--json", *args)).stdout)


# how `up` resolves the setting (pure) --------------------------------------------------------------
@pytest.mark.parametrize("autostop_setting, explicit, down, before, expected", [
    (None, set(), False, None, None),                                        # never set: nothing
    ("30m", {"autostop"}, False, None, Autostop(1800)),
    ("30m", {"autostop"}, True, None, Autostop(1800, down=True)),
    ("30m", set(), False, None, Autostop(1800)),                             # awsrun.toml: a new cluster's default
    (None, set(), False, Autostop(3600, down=True), Autostop(3600, down=True)),  # a plain `up` keeps it
    (None, set(), True, Autostop(3600), Autostop(3600, down=True)),          # --autostop-down alone
    ("2h", {"autostop"}, False, Autostop(3600, down=True), Autostop(7200)),  # the flags say it all
    ("2h", set(), False, Autostop(None), Autostop(None)),                    # the default never undoes `autostop off`
    ("off", {"autostop"}, False, Autostop(3600, True, True), Autostop(None, False, True)),
])
def test_up_resolves_flags_config_and_the_recorded_setting(autostop_setting, explicit, down, before, expected):
    settings = Settings(autostop=autostop_setting)
    assert autostop.for_up(settings, frozenset(explicit), down, before) == expected


def test_autostop_down_without_a_duration_is_refused():
    with pytest.raises(ConfigError) as raised:
        autostop.for_up(Settings(), frozenset(), True, None)
    assert "--autostop-down needs an autostop duration" in raised.value.message


def test_down_cancels_spot_requests_before_setting_terminate():
    calls = []

    class Provider:
        def cancel_spot_requests(self, ids):
            calls.append(("cancel", ids))

        def set_shutdown_behavior(self, instance_id, behavior):
            calls.append(("behavior", instance_id, behavior))

    records = [InstanceRecord("i-1", "c", "running", market="spot", extra={"spot_request_id": "sir-1"}),
               InstanceRecord("i-2", "c", "stopped", market="spot", extra={"spot_request_id": "sir-2"}),
               InstanceRecord("i-3", "c", "terminated", market="spot", extra={"spot_request_id": "sir-3"})]
    reporter = Silent()
    assert autostop.apply_shutdown_behavior(Provider(), records, Autostop(1800, down=True), reporter) == ["i-1", "i-2"]
    assert calls == [("cancel", ["sir-1", "sir-2"]), ("behavior", "i-1", "terminate"), ("behavior", "i-2", "terminate")]
    assert "a spot interruption now ends the instance" in reporter.warnings[0]
    calls.clear()
    autostop.apply_shutdown_behavior(Provider(), records, Autostop(1800), Silent())
    assert calls == [("behavior", "i-1", "stop"), ("behavior", "i-2", "stop")]  # never cancels for stop


# the CLI against moto + a loopback host ------------------------------------------------------------
def test_up_autostop_down_then_autostop_changes_it_live_and_status_shows_it(cli, aws, ec2, fleet):
    up = ok(cli("up", "--on-demand", "--instance-type", "g4dn.xlarge", "--ssh-cidr", SSH_CIDR, "--no-bootstrap",
                "--autostop", "30m", "--autostop-down"))
    (launch,) = aws.launch_requests()
    assert launch["InstanceInitiatedShutdownBehavior"] == "terminate"
    (cluster,) = status_json(cli)["clusters"]
    instance_id = cluster["instances"][0]["id"]
    host = fleet.host_of(instance_id)
    assert shutdown_behavior(ec2, instance_id) == "terminate"
    assert cluster["autostop"] == {"idle_seconds": 1800, "down": True, "count_ssh_users": False}
    assert cluster["autostop_label"] == "terminate after 30m without jobs"
    assert agent_config(host) == {"idle_seconds": 1800, "count_ssh_users": False}
    assert f"agent on {instance_id}: no systemd on this host" in up.stderr  # the loopback host has none

    changed = ok(cli("autostop", "45m", "--while-ssh"))
    assert "cluster 'default': autostop stop after 45m without jobs or SSH users" in changed.stderr
    assert shutdown_behavior(ec2, instance_id) == "stop"
    assert agent_config(host) == {"idle_seconds": 2700, "count_ssh_users": True}
    table = ok(cli("status")).stdout.splitlines()
    assert table[1].split("\t")[table[0].split("\t").index("autostop")] == "45m then stop"

    # --agent asks the agent on the node: idle since its last check, so it fires 45 minutes after it
    run_agent(fleet, host, "tick")
    (row,) = status_json(cli, "--agent")["clusters"][0]["instances"]
    seen = run_agent(fleet, host, "status")
    assert row["agent"] == seen and seen["fires_at"] == seen["idle_since"] + 2700
    table = ok(cli("status", "--agent")).stdout.splitlines()
    fires = table[1].split("\t")[table[0].split("\t").index("autostop fires")]
    minutes = (seen["fires_at"] - time.time()) / 60
    assert fires in {f"in 0h{int(m):02d}m" for m in (minutes, minutes - 1)}, fires

    ok(cli("autostop", "off"))
    assert agent_config(host) == {"idle_seconds": None, "count_ssh_users": False}
    assert status_json(cli)["clusters"][0]["autostop_label"] == "off"
    ok(cli("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap"))  # a plain `up` keeps the recorded setting
    assert agent_config(host) == {"idle_seconds": None, "count_ssh_users": False}
    ok(cli("down", "--yes"))


def test_a_stopped_cluster_gets_its_new_setting_when_it_starts(cli, aws, ec2, fleet):
    ok(cli("up", "--on-demand", "--ssh-cidr", SSH_CIDR, "--no-bootstrap", "--autostop", "1h"))
    instance_id = status_json(cli)["clusters"][0]["instances"][0]["id"]
    ok(cli("stop"))
    changed = ok(cli("autostop", "20m", "--down"))
    assert f"{instance_id} is not running: its agent gets the setting at `awsrun start`" in changed.stderr
    assert shutdown_behavior(ec2, instance_id) == "terminate"  # EC2 takes it while stopped
    ok(cli("start"))
    assert agent_config(fleet.host_of(instance_id)) == {"idle_seconds": 1200, "count_ssh_users": False}
    ok(cli("down", "--yes"))


def test_bad_durations_fail_before_anything_is_created(cli, aws, ec2):
    for args, message in ((["--autostop", "soon"], "autostop 'soon' is not a duration"),
                          (["--autostop-down"], "--autostop-down needs an autostop duration")):
        result = cli("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap", *args)
        assert result.exit_code == 2 and message in result.stderr, result
    assert ec2.describe_instances()["Reservations"] == [] and aws.launch_requests() == []


def test_machines_awsrun_did_not_launch_never_get_an_autostop(cli, tmp_path):
    refused = cli("up", "--local", "--no-bootstrap", "--autostop", "30m")
    assert refused.exit_code == 2 and "autostop applies to EC2 clusters" in refused.stderr, refused
    (tmp_path / "project" / "awsrun.toml").write_text('autostop = "30m"\n')
    warned = ok(cli("up", "--local", "--no-bootstrap"))
    assert "warning: autostop (30m) applies to EC2 clusters only" in warned.stderr
    result = cli("autostop", "30m")
    assert result.exit_code == 2 and "is this machine (local)" in result.stderr, result
    assert status_json(cli)["clusters"][0]["autostop"] is None


def test_up_autostop_gpu_idle_reaches_the_agent(cli, aws, ec2, fleet):
    ok(cli("up", "--instance-type", "g4dn.xlarge", "--ssh-cidr", SSH_CIDR, "--no-bootstrap",
           "--autostop", "30m", "--autostop-gpu-idle", "5%"))
    (cluster,) = status_json(cli)["clusters"]
    host = fleet.host_of(cluster["instances"][0]["id"])
    assert agent_config(host) == {"idle_seconds": 1800, "count_ssh_users": False, "gpu_idle_percent": 5.0}
    refused = cli("up", "--cluster", "other", "--ssh-cidr", SSH_CIDR, "--no-bootstrap", "--autostop-gpu-idle", "5%")
    assert refused.exit_code != 0 and "error: --autostop-gpu-idle needs an autostop duration" in refused.stderr
    assert len(aws.launch_requests()) == 1  # refused before anything was created for 'other'
