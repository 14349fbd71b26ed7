"""`awsrun up / status / stop / start / down` as a user runs them: the real CLI in a subprocess against the
moto EC2 endpoint, with SSH through the harness ProxyCommand to loopback sshd hosts."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.harness.cli import wait_for_pause

SSH_CIDR = "203.0.113.7/32"
PHASES = ("before-launch", "run-instances", "wait-running", "wait-ssh")


def up(cli, *args: str, env: dict[str, str] | None = None):
    return cli("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap", *args, env=env)


def ok(result):
    assert result.exit_code == 0, result
    assert "Traceback" not in result.stderr, result
    return result


def live(ec2, cluster: str | None = "default") -> list[dict]:
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    if cluster:
        filters.append({"Name": "tag:awsrun:cluster", "Values": [cluster]})
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def state_of(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def status_json(cli) -> dict:
    return json.loads(ok(cli("status", "--json")).stdout)


def status_ids(report: dict) -> set[str]:
    return {i["id"] for c in report["clusters"] for i in c["instances"]}


def awsrun_groups(ec2) -> list[dict]:
    return [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("awsrun-")]


def awsrun_key_pairs(ec2) -> list[str]:
    return [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("awsrun-")]


def assert_nothing_left(ec2) -> None:
    assert live(ec2, cluster=None) == []
    assert awsrun_groups(ec2) == []
    assert awsrun_key_pairs(ec2) == []


def assert_launch(ec2, instance: dict, *, instance_type: str, spot: bool, volume_gb: int) -> None:
    assert instance["InstanceType"] == instance_type
    assert instance.get("InstanceLifecycle") == ("spot" if spot else None)
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["awsrun:cluster"] == "default" and tags["Name"] == "awsrun-default-0"
    assert tags["awsrun:owner"].startswith("arn:aws:") and len(tags["awsrun:launch-token"]) == 32
    volume = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                            "Values": [instance["InstanceId"]]}])["Volumes"]
    assert [(v["Size"], v["VolumeType"], v["Encrypted"]) for v in volume] == [(volume_gb, "gp3", True)]
    assert {t["Key"]: t["Value"] for t in volume[0]["Tags"]}["awsrun:cluster"] == "default"
    (group,) = ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in instance["SecurityGroups"]])[
        "SecurityGroups"]
    ssh = [p for p in group["IpPermissions"] if p.get("FromPort") == 22]
    assert [r["CidrIp"] for p in ssh for r in p["IpRanges"]] == [SSH_CIDR]
    everyone = [p for p in group["IpPermissions"] if p["IpProtocol"] == "-1"]
    assert [pair["GroupId"] for p in everyone for pair in p["UserIdGroupPairs"]] == [group["GroupId"]]
    assert all(r["CidrIp"] != "0.0.0.0/0" for p in group["IpPermissions"] for r in p["IpRanges"])


def test_spot_p2_lifecycle_up_status_stop_start_down(cli, ec2, fleet, awsrun_home):
    ok(up(cli, "--spot", "--instance-type", "p2.xlarge", "--volume-gb", "150"))
    (instance,) = live(ec2)
    instance_id = instance["InstanceId"]
    assert_launch(ec2, instance, instance_type="p2.xlarge", spot=True, volume_gb=150)
    # up connected over SSH through the ProxyCommand (the fleet bound the instance to a host) and pinned its key
    assert fleet.host_of(instance_id).address.startswith("127.")
    assert (awsrun_home / "known_hosts").read_text().startswith(f"{instance_id} ssh-ed25519 ")
    assert oct((awsrun_home / "keys" / "awsrun_ed25519").stat().st_mode & 0o777) == "0o600"

    report = status_json(cli)
    (cluster,) = report["clusters"]
    (row,) = cluster["instances"]
    assert (cluster["name"], cluster["provider"], cluster["region"]) == ("default", "aws", "us-east-1")
    assert (row["id"], row["instance_type"], row["market"], row["state"]) == (instance_id, "p2.xlarge", "spot", "running")
    assert row["public_ip"] == instance["PublicIpAddress"] and row["zone"] == instance["Placement"]["AvailabilityZone"]
    assert row["hourly_usd"] > 0 and row["cost_usd"] >= 0 and report["orphans"] == []

    ok(cli("stop"))
    assert state_of(ec2, instance_id) == "stopped"
    assert status_json(cli)["clusters"][0]["instances"][0]["state"] == "stopped"
    ok(cli("start"))
    assert state_of(ec2, instance_id) == "running"
    assert status_json(cli)["clusters"][0]["instances"][0]["public_ip"] == live(ec2)[0]["PublicIpAddress"]

    ok(cli("down", "--yes"))
    assert state_of(ec2, instance_id) == "terminated"
    assert_nothing_left(ec2)
    assert status_json(cli)["clusters"] == []


def test_on_demand_g4dn_and_up_twice_keeps_one_instance(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge"))
    (instance,) = live(ec2)
    assert_launch(ec2, instance, instance_type="g4dn.xlarge", spot=False, volume_gb=100)

    again = ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge"))
    assert [i["InstanceId"] for i in live(ec2)] == [instance["InstanceId"]]
    assert instance["InstanceId"] in again.stderr

    ok(cli("stop"))
    ok(up(cli))  # up on a stopped cluster starts it, never launches another
    assert [(i["InstanceId"], i["State"]["Name"]) for i in live(ec2)] == [(instance["InstanceId"], "running")]
    row = status_json(cli)["clusters"][0]["instances"][0]
    assert (row["market"], row["hourly_usd"], row["price_source"]) == ("on-demand", 0.526, "on-demand list price")

    ok(cli("down", "--yes"))
    assert_nothing_left(ec2)


def test_no_ssh_cidr_and_no_address_lookup_is_a_clear_error(cli, ec2):
    result = cli("up", "--no-bootstrap")
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result
    assert result.stderr.splitlines()[0] == \
        "error: no --ssh-cidr given and looking up your address is off (caller_ip_url = off)"
    assert "--ssh-cidr YOUR.ADDRESS/32" in result.stderr
    assert live(ec2, cluster=None) == [] and status_json(cli)["clusters"] == []


def test_ssh_open_to_everyone_only_when_asked_and_with_a_warning(cli, ec2, fleet):
    result = ok(cli("up", "--no-bootstrap", "--ssh-cidr", "0.0.0.0/0"))
    assert "warning: SSH is open to the whole internet (0.0.0.0/0)" in result.stderr
    (group,) = awsrun_groups(ec2)
    assert [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]] == ["0.0.0.0/0"]
    ok(cli("down", "--yes"))


def test_instance_that_never_answers_ssh_is_kept_recorded_with_console_hint(cli, ec2, fleet):
    unreachable = {"AWSRUN_SSH_TIMEOUT": "1", "AWSRUN_SSH_PROXY_COMMAND": "/nonexistent/proxy %h %p"}
    result = up(cli, env=unreachable)
    assert result.exit_code == 5 and "Traceback" not in result.stderr, result
    (instance,) = live(ec2)
    assert f"error: instance {instance['InstanceId']} never became SSH-reachable: gave up after " in result.stderr
    assert "(ssh_timeout 1s; " in result.stderr
    assert f"aws ec2 get-console-output --instance-id {instance['InstanceId']}" in result.stderr
    assert status_ids(status_json(cli)) == {instance["InstanceId"]}
    ok(cli("down", "--yes"))
    assert_nothing_left(ec2)


def test_two_nodes_share_a_zone_when_no_placement_group_can_be_made(cli, ec2, fleet):
    # moto answers create_placement_group with HTTP 500: awsrun says so and launches without one.
    result = ok(up(cli, "--nodes", "2", env={"AWS_MAX_ATTEMPTS": "1"}))
    assert "warning: no cluster placement group" in result.stderr
    nodes = sorted(live(ec2), key=lambda i: {t["Key"]: t["Value"] for t in i["Tags"]}["awsrun:node"])
    assert [{t["Key"]: t["Value"] for t in i["Tags"]}["awsrun:node"] for i in nodes] == ["0", "1"]
    assert len({i["Placement"]["AvailabilityZone"] for i in nodes}) == 1
    ok(up(cli))  # the cluster has two nodes now: up keeps both, adds none
    assert len(live(ec2)) == 2
    ok(cli("down", "--yes"))
    assert_nothing_left(ec2)


def _start_paused(cli, phase: str) -> subprocess.Popen:
    process = subprocess.Popen(
        cli.argv("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap"), cwd=cli.cwd,
        env=cli.environment({"AWSRUN_TEST_PAUSE_AT": phase}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_pause(process, phase)
    return process


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("phase", PHASES)
def test_up_killed_at_each_phase_leaves_nothing_awsrun_does_not_show(cli, ec2, fleet, phase, sig):
    process = _start_paused(cli, phase)
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "Traceback" not in err, err
        assert "error: interrupted:" in err and "awsrun up --cluster default" in err
        assert "awsrun down --cluster default" in err
    else:
        assert process.returncode == -signal.SIGKILL

    launched = {i["InstanceId"] for i in live(ec2, cluster=None)}
    assert len(launched) == (0 if phase == "before-launch" else 1)
    assert launched <= status_ids(status_json(cli))  # every instance is shown
    ok(cli("down", "--yes"))
    assert_nothing_left(ec2)


@pytest.mark.parametrize("phase", ["run-instances", "wait-ssh"])
def test_up_after_a_killed_up_continues_with_the_recorded_instance(cli, ec2, fleet, phase):
    process = _start_paused(cli, phase)
    process.kill()
    process.wait(timeout=30)
    (instance,) = live(ec2)
    ok(up(cli))
    assert [i["InstanceId"] for i in live(ec2)] == [instance["InstanceId"]]
    assert status_ids(status_json(cli)) == {instance["InstanceId"]}
    ok(cli("down", "--yes"))


def test_status_adopts_an_instance_the_state_lost(cli, ec2, fleet, awsrun_home):
    ok(up(cli))
    (instance,) = live(ec2)
    (awsrun_home / "state.db").unlink()
    for suffix in ("-wal", "-shm"):
        (awsrun_home / f"state.db{suffix}").unlink(missing_ok=True)
    report = status_json(cli)
    assert [(o["id"], o["cluster"], o["adopted"]) for o in report["orphans"]] == [
        (instance["InstanceId"], "default", True)]
    assert status_ids(report) == {instance["InstanceId"]}
    ok(cli("down", "--yes"))
    assert_nothing_left(ec2)


def test_local_and_existing_hosts(cli, fleet, tmp_path, awsrun_home):
    ok(cli("up", "--local", "--no-bootstrap", "--cluster", "here"))
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    host = fleet.hosts[0]
    host.authorize(key.with_suffix(".pub").read_text())
    target = f"ubuntu@{host.address}:{host.port}"
    ok(cli("up", "--host", target, "--ssh-key", str(key), "--no-bootstrap", "--cluster", "mine"))
    assert (awsrun_home / "known_hosts").read_text().startswith(f"{host.address}:{host.port} ssh-ed25519 ")

    report = status_json(cli)
    rows = {c["name"]: (c["provider"], [(i["id"], i["state"]) for i in c["instances"]]) for c in report["clusters"]}
    assert rows == {"here": ("local", [("local", "running")]),
                    "mine": ("ssh", [(f"{host.address}:{host.port}", "running")])}
    stop = cli("stop", "--cluster", "mine")
    assert stop.exit_code == 2 and "does not stop them" in stop.stderr
    unconfirmed = cli("down", "--cluster", "mine")  # no terminal to ask on: --yes is required
    assert unconfirmed.exit_code == 2 and "confirm with --yes" in unconfirmed.stderr, unconfirmed
    ok(cli("down", "--yes", "--cluster", "mine"))
    ok(cli("down", "--yes", "--cluster", "here"))
    assert status_json(cli)["clusters"] == []


def test_world_readable_key_is_refused_with_the_fix(cli, ec2, tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key.chmod(0o644)
    result = up(cli, "--ssh-key", str(key))
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result
    assert "is readable by other users (mode 0644)" in result.stderr
    assert f"hint: chmod 600 {key}" in result.stderr
    assert live(ec2, cluster=None) == []


def test_suggested_commands_name_the_cluster_when_the_settings_name_another(cli, ec2, fleet):
    """With AWSRUN_CLUSTER=train, a bare `awsrun stop` acts on 'train': hints about 'default' must say so."""
    cli.env["AWSRUN_CLUSTER"] = "train"
    ready = ok(up(cli, "--cluster", "default"))
    assert "`awsrun submit SCRIPT --cluster default`" in ready.stderr
    assert "`awsrun stop --cluster default` stops billing" in ready.stderr
    stopped = ok(cli("stop", "--cluster", "default"))
    assert "`awsrun start --cluster default` resumes, `awsrun down --cluster default` ends it" in stopped.stderr
    ok(cli("down", "--yes", "--cluster", "default"))


def test_status_names_a_cluster_whose_instance_was_terminated_outside_awsrun(cli, ec2, fleet):
    """Its security group and key pair remain: `status` must not say "no clusters"."""
    ok(up(cli, "--cluster", "v"))
    (instance,) = live(ec2, "v")
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    shown = ok(cli("status"))
    assert "no clusters" not in shown.stderr
    assert ("note: cluster 'v' has no instances any more (terminated, or never launched): "
            "`awsrun up --cluster v` launches one, `awsrun down --cluster v` deletes what is left of it") in shown.stderr
    ok(cli("down", "--yes", "--cluster", "v"))
    assert_nothing_left(ec2)
    assert "no clusters" in ok(cli("status")).stderr
