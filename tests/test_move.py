"""`awsrun start --move`: a stopped instance whose zone has no capacity now moves to another zone with its
disk (an image of it, a new instance, then the old one and the image go), keeping the cluster's name and its
files; a kill at any step leaves nothing `status` / `down` does not see.

The zone's refusal is injected into moto (`aws.fail_starts`); the harness boots an instance launched from an
image of another instance with a copy of that instance's disk (tests/harness/proxy.py)."""
from __future__ import annotations

import subprocess

import pytest

from tests.harness.cli import wait_for_pause
from tests.test_up_e2e import live, ok, state_of, status_ids, status_json, up

NO_ROOM = "We currently do not have sufficient g4dn.xlarge capacity in the Availability Zone you requested."


def stopped_with_a_file(cli, ec2, fleet) -> dict:
    ok(up(cli))
    (instance,) = live(ec2)
    home = fleet.host_of(instance["InstanceId"]).home
    (home / "before-stop.txt").write_text("weights of epoch 7\n")
    ok(cli("stop"))
    return instance


def ours_in_the_cloud(ec2) -> tuple[list, list]:
    images = ec2.describe_images(Owners=["self"])["Images"]
    snapshots = ec2.describe_snapshots(Filters=[{"Name": "tag-key", "Values": ["awsrun:cluster"]}])["Snapshots"]
    return images, snapshots


def test_start_says_move_when_the_zone_is_full_and_move_keeps_the_disk(cli, aws, ec2, fleet):
    old = stopped_with_a_file(cli, ec2, fleet)
    zone = old["Placement"]["AvailabilityZone"]
    aws.fail_starts("InsufficientInstanceCapacity", NO_ROOM, zone=zone)

    refused = cli("start")
    assert refused.exit_code != 0 and "Traceback" not in refused.stderr
    assert "`awsrun start --move`" in refused.stderr and state_of(ec2, old["InstanceId"]) == "stopped"

    ok(cli("start", "--move"))
    (new,) = live(ec2)
    assert new["InstanceId"] != old["InstanceId"] and new["Placement"]["AvailabilityZone"] != zone
    assert new["InstanceType"] == old["InstanceType"]
    tags = {t["Key"]: t["Value"] for t in new["Tags"]}
    assert tags["awsrun:cluster"] == "default" and tags["awsrun:node"] == "0"
    assert state_of(ec2, old["InstanceId"]) == "terminated"
    assert ours_in_the_cloud(ec2) == ([], [])  # the image and its snapshot went once the new one answered
    assert status_ids(status_json(cli)) == {new["InstanceId"]}
    shown = ok(cli("ssh", "--", "cat", "before-stop.txt"))
    assert shown.stdout == "weights of epoch 7\n"
    assert fleet.host_of(new["InstanceId"]).name != fleet.host_of(old["InstanceId"]).name  # another machine
    ok(cli("down", "--yes"))


@pytest.mark.parametrize("phase", ["move-image", "before-launch", "move-answered"])
def test_a_kill_during_a_move_leaves_nothing_unseen(cli, aws, ec2, fleet, phase):
    stopped_with_a_file(cli, ec2, fleet)
    aws.fail_starts("InsufficientInstanceCapacity", NO_ROOM, zone="us-east-1a")
    process = subprocess.Popen(cli.argv("start", "--move"), cwd=cli.cwd,
                               env=cli.environment({"AWSRUN_TEST_PAUSE_AT": phase}),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_pause(process, phase)
    finally:
        process.kill()
        process.wait(timeout=30)
    launched = {i["InstanceId"] for i in live(ec2)}
    assert launched <= status_ids(status_json(cli))
    images, snapshots = ours_in_the_cloud(ec2)
    assert len(images) == 1 and len(snapshots) == 1  # tagged as the cluster's: down finds them
    ok(cli("down", "--yes"))
    assert live(ec2) == [] and ours_in_the_cloud(ec2) == ([], [])


def test_up_on_a_stopped_cluster_whose_zone_is_full_names_start_move(cli, aws, ec2, fleet):
    old = stopped_with_a_file(cli, ec2, fleet)
    aws.fail_starts("InsufficientInstanceCapacity", NO_ROOM, zone=old["Placement"]["AvailabilityZone"])
    refused = up(cli)
    assert refused.exit_code != 0 and "Traceback" not in refused.stderr
    assert "`awsrun start --cluster default --move`" in refused.stderr
    assert [i["InstanceId"] for i in live(ec2)] == [old["InstanceId"]]  # nothing launched beside it


def test_a_spot_instance_stopped_by_an_interruption_moves_the_same_way(cli, aws, ec2, fleet):
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    from tests.harness.ec2_endpoint import ACCOUNT_ID

    ok(up(cli, "--spot"))
    (old,) = live(ec2)
    (fleet.host_of(old["InstanceId"]).home / "before-stop.txt").write_text("weights of epoch 7\n")
    ok(cli("stop"))
    instance = ec2_backends[ACCOUNT_ID]["us-east-1"].get_instance(old["InstanceId"])  # what EC2 records for one
    instance.state_reason = StateReason("Server.SpotInstanceShutdown: Spot instance shutdown",
                                        "Server.SpotInstanceShutdown")
    starts = len(aws.launch_requests())

    refused = cli("start")
    assert refused.exit_code != 0 and "stopped by a spot interruption" in refused.stderr
    assert "`awsrun start --move`" in refused.stderr
    assert (f"note: {old['InstanceId']} is stopped, and its 100 GB disk still bills about $8.00/month (gp3 list "
            "price): EC2 restarts it when spot capacity returns (or `awsrun start --move` moves it), "
            "`awsrun down` ends it") in ok(cli("status")).stderr

    ok(cli("start", "--move"))
    (new,) = live(ec2)
    assert new["InstanceId"] != old["InstanceId"] and new.get("InstanceLifecycle") == "spot"
    assert len(aws.launch_requests()) == starts + 1
    assert ok(cli("ssh", "--", "cat", "before-stop.txt")).stdout == "weights of epoch 7\n"
    assert state_of(ec2, old["InstanceId"]) == "terminated"
    ok(cli("down", "--yes"))


def test_a_move_of_a_kept_disk_keeps_the_new_one_and_says_the_old_one_bills_on(cli, aws, ec2, fleet):
    """With `up --keep-volume`, the new instance's disk outlives `down` as the old one did, and the old disk,
    which termination leaves behind, is named with its delete command and listed by `status`."""
    ok(up(cli, "--keep-volume"))
    (old,) = live(ec2)
    (old_disk,) = [m["Ebs"]["VolumeId"] for m in old["BlockDeviceMappings"]]
    ok(cli("stop"))
    aws.fail_starts("InsufficientInstanceCapacity", NO_ROOM, zone=old["Placement"]["AvailabilityZone"])
    moved = ok(cli("start", "--move"))
    assert f"the old disk {old_disk} of {old['InstanceId']} was kept (up --keep-volume)" in moved.stderr
    assert f"`awsrun delete-disk {old_disk} --region us-east-1` deletes it" in moved.stderr
    (new,) = live(ec2)
    assert [m["Ebs"]["DeleteOnTermination"] for m in new["BlockDeviceMappings"]] == [False]
    assert [d["id"] for d in status_json(cli)["left_disks"]] == [old_disk]
    ok(cli("delete-disk", old_disk, "--yes"))
    down = ok(cli("down", "--yes", "--delete-disks"))
    assert "deleted disk vol-" in down.stderr
    assert ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["awsrun:cluster"]}])["Volumes"] == []
