"""What keeps billing when nothing runs is never unseen: a stopped instance's disk (stop, status), and a disk
that outlives its instance (`up --keep-volume`: down, status, delete-disk), each with its monthly list price.
The real CLI against the moto EC2 endpoint, instances behind loopback sshd hosts, as in tests/test_up_e2e.py."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from awsrun.cluster import disks
from awsrun.providers.aws_volumes import Ec2Volume
from tests.test_up_e2e import live, ok, status_json, up

OTHER_OWNER = "arn:aws:iam::210987654321:user/bob"


def awsrun_volumes(ec2) -> list[dict]:
    return ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["awsrun:cluster"]}])["Volumes"]


def refused(result, code: int = 2):
    assert result.exit_code == code and "Traceback" not in result.stderr, result
    return result


def test_a_stopped_instance_shows_what_its_disk_still_costs_and_down_deletes_it(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--volume-gb", "150"))
    (instance,) = live(ec2)
    row = status_json(cli)["clusters"][0]["instances"][0]
    assert (row["disk_gb"], row["disk_usd_per_month"], row["disk_kept"]) == (150, 12.0, False)  # 150 x $0.08

    stopped = ok(cli("stop"))
    assert ("compute billing ended; the 150 GB of disk still bills about $12.00/month (gp3 list price): "
            "`awsrun start` resumes, `awsrun down` ends it") in stopped.stderr
    shown = ok(cli("status"))
    assert (f"note: {instance['InstanceId']} is stopped, and its 150 GB disk still bills about $12.00/month "
            "(gp3 list price): `awsrun start` resumes it, `awsrun down` ends it") in shown.stderr
    header, row_text = shown.stdout.splitlines()[:2]
    assert header.split("\t")[-2:] == ["autostop", "disk"]  # appended: scripts reading the columns keep working
    assert row_text.split("\t")[-1] == "150 GB"

    down = ok(cli("down", "--yes"))
    assert "kept disk" not in down.stderr and "nothing left in the cloud but" not in down.stderr
    assert [v["State"] for v in awsrun_volumes(ec2)] in ([], ["deleting"])


def test_a_kept_disk_is_named_priced_listed_and_deleted_on_request(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--keep-volume"))
    (volume,) = awsrun_volumes(ec2)
    vol = volume["VolumeId"]
    stopped = ok(cli("stop"))
    assert "`awsrun down --delete-disks` ends it (kept after `down`)" in stopped.stderr
    assert "`awsrun down --delete-disks` ends it (the disk is kept after `down`)" in ok(cli("status")).stderr

    down = ok(cli("down", "--yes"))
    assert (f"kept disk {vol} (100 GB): it bills about $8.00/month (gp3 list price) until deleted: "
            f"`awsrun delete-disk {vol} --region us-east-1` deletes it") in down.stderr
    assert [v["State"] for v in awsrun_volumes(ec2)] == ["available"]

    report = status_json(cli)
    assert report["clusters"] == []
    (left,) = report["left_disks"]
    assert (left["id"], left["cluster"], left["size_gb"], left["volume_type"], left["region"], left["usd_per_month"]) \
        == (vol, "default", 100, "gp3", "us-east-1", 8.0)
    shown = ok(cli("status"))
    assert ("# disks no instance uses (kept after `down` or a `start --move`): they bill until deleted"
            in shown.stdout)
    assert f"{vol}\tdefault\t" in shown.stdout
    assert f"`awsrun delete-disk {vol} --region us-east-1` deletes them (your own only)" in shown.stderr

    asked = refused(cli("delete-disk", vol))  # no terminal to confirm on
    assert f"would delete {vol} (100 GB, cluster default) and what it holds: confirm with --yes" in asked.stderr
    assert [v["VolumeId"] for v in awsrun_volumes(ec2)] == [vol]
    deleted = ok(cli("delete-disk", vol, "--region", "us-east-1", "--yes"))
    assert f"deleted {vol} in us-east-1" in deleted.stderr
    assert awsrun_volumes(ec2) == []
    assert status_json(cli)["left_disks"] == [] and "no instance uses" not in ok(cli("status")).stdout


def test_down_delete_disks_takes_the_kept_disk_with_its_instance(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--keep-volume"))
    (instance,) = live(ec2)
    (volume,) = awsrun_volumes(ec2)
    asked = refused(cli("down", "--delete-disks"))
    assert "and every disk it kept: confirm with --yes" in asked.stderr
    assert "awsrun down --yes --cluster default --delete-disks" in asked.stderr
    down = ok(cli("down", "--yes", "--delete-disks"))
    assert f"terminated {instance['InstanceId']}" in down.stderr and f"deleted disk {volume['VolumeId']}" in down.stderr
    assert "kept disk" not in down.stderr
    assert awsrun_volumes(ec2) == [] and status_json(cli)["left_disks"] == []


def test_deleting_a_left_disk_never_touches_the_live_cluster_of_the_same_name(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--keep-volume"))
    (old,) = awsrun_volumes(ec2)
    ok(cli("down", "--yes"))
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge"))
    (instance,) = live(ec2)
    new = [v["VolumeId"] for v in awsrun_volumes(ec2) if v["VolumeId"] != old["VolumeId"]]
    hint = ok(cli("status")).stderr
    assert f"`awsrun delete-disk {old['VolumeId']} --region us-east-1`" in hint

    in_use = refused(cli("delete-disk", *new, "--yes"))
    assert f"disk {new[0]} is in-use by {instance['InstanceId']}, not left behind: not deleted" in in_use.stderr
    ok(cli("delete-disk", old["VolumeId"], "--yes"))
    assert [i["InstanceId"] for i in live(ec2)] == [instance["InstanceId"]]
    assert [v["VolumeId"] for v in awsrun_volumes(ec2)] == new
    ok(cli("down", "--yes"))


def test_another_owners_disk_is_listed_never_deleted(cli, ec2, fleet):
    theirs = ec2.create_volume(AvailabilityZone="us-east-1a", Size=20, VolumeType="gp3", TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": "awsrun:cluster", "Value": "default"},
                                           {"Key": "awsrun:owner", "Value": OTHER_OWNER}]}])["VolumeId"]
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge"))
    (left,) = status_json(cli)["left_disks"]
    assert (left["id"], left["owner"], left["usd_per_month"]) == (theirs, OTHER_OWNER, 1.6)
    not_mine = refused(cli("delete-disk", theirs, "--yes"))
    assert f"disk {theirs} belongs to {OTHER_OWNER}, not to you: not deleted" in not_mine.stderr
    missing = refused(cli("delete-disk", "vol-0123456789abcdef0", "--yes"), code=7)
    assert "no awsrun disk vol-0123456789abcdef0 in us-east-1" in missing.stderr
    ok(cli("down", "--yes", "--delete-disks"))
    assert [v["VolumeId"] for v in awsrun_volumes(ec2)] == [theirs]


def test_a_kept_disk_in_another_region_stays_in_status_after_its_cluster_is_gone(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--keep-volume", "--region", "us-west-2"))
    down = ok(cli("down", "--yes"))
    assert "--region us-west-2` deletes it" in down.stderr
    (left,) = status_json(cli)["left_disks"]  # the default region is us-east-1, and no cluster is recorded
    assert (left["region"], left["usd_per_month"]) == ("us-west-2", 8.0)
    ok(cli("delete-disk", left["id"], "--region", "us-west-2", "--yes"))
    assert status_json(cli)["left_disks"] == []


def test_without_permission_to_list_disks_status_stop_and_down_still_work_and_say_so(cli, aws, ec2, fleet):
    """An IAM policy made before awsrun read disks lacks ec2:DescribeVolumes: the disks go unsaid, nothing
    fails, except a `down --delete-disks`, which cannot do what it was asked."""
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--keep-volume"))
    aws.deny("DescribeVolumes")
    why = "note: disks in us-east-1 not checked: "
    shown = ok(cli("status"))
    assert why in shown.stderr and "UnauthorizedOperation" in shown.stderr
    assert status_json(cli)["clusters"][0]["instances"][0]["disk_gb"] is None
    stopped = ok(cli("stop"))
    assert "stopped i-" in stopped.stderr and why in stopped.stderr
    failed = refused(cli("down", "--yes", "--delete-disks"), code=4)
    assert "is gone: terminated i-" in failed.stderr
    assert "error: disks in us-east-1 not checked: " in failed.stderr and ": no disk was deleted" in failed.stderr
    aws.allow("DescribeVolumes")
    assert [v["State"] for v in awsrun_volumes(ec2)] == ["available"]  # kept, as asked at launch; not lost


def test_a_disk_another_down_deleted_meanwhile_is_not_an_error(aws, ec2):
    from awsrun.providers.aws import AwsProvider

    provider = AwsProvider("us-east-1", max_attempts=1)
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, VolumeType="gp3")["VolumeId"]
    provider.delete_volume(volume)
    provider.delete_volume(volume)  # two `down --delete-disks` at once: the second finds it gone
    assert [v for v in ec2.describe_volumes()["Volumes"] if v["VolumeId"] == volume] == []


def test_volumes_are_read_from_ec2s_answer():
    created = datetime(2026, 12, 1, tzinfo=timezone.utc)
    attached = Ec2Volume.from_api({
        "VolumeId": "vol-1", "Size": 100, "VolumeType": "gp3", "State": "in-use", "CreateTime": created,
        "Attachments": [{"InstanceId": "i-1", "State": "attached", "DeleteOnTermination": False}],
        "Tags": [{"Key": "awsrun:cluster", "Value": "train"}, {"Key": "awsrun:owner", "Value": "arn:me"}]})
    assert (attached.instance_id, attached.state) == ("i-1", "in-use")
    assert (attached.cluster, attached.owner, attached.created_at) == ("train", "arn:me", created.timestamp())
    alone = Ec2Volume.from_api({"VolumeId": "vol-2", "Size": 8, "VolumeType": "gp2", "State": "available",
                                "Attachments": []})
    assert (alone.instance_id, alone.state, alone.cluster) == (None, "available", None)


def _disk(state: str = "available", usd: float | None = 8.0, instance: str | None = None) -> disks.Disk:
    return disks.Disk("vol-1", "c", "o", 100, "gp3", "r", state, instance, state == "available", None, usd)


def test_only_an_available_disk_is_left_behind():
    """A volume still being created, or one whose instance is letting go of it, is not billed on its own yet."""
    assert [_disk(state).left_behind for state in ("available", "creating", "in-use")] == [True, False, False]


@pytest.mark.parametrize("size, volume_type, region, usd", [
    (100, "gp3", "us-east-1", 8.0),
    (100, "gp3", "eu-west-1", 8.8),
    (100, "gp3", "ap-south-1", None),   # a region the catalog does not price
    (100, "io2", "us-east-1", None),    # not what awsrun launches: not priced rather than mispriced
])
def test_monthly_price_of_a_disk(size, volume_type, region, usd):
    assert disks.monthly_usd(size, volume_type, region) == usd


def test_a_total_with_an_unknown_price_is_unknown_not_partial():
    assert disks.total_usd_per_month([_disk(usd=8.0), _disk(usd=8.8)]) == 16.8
    assert disks.total_usd_per_month([_disk(usd=8.0), _disk(usd=None)]) is None
