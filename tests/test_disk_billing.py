"""What keeps billing when nothing runs is never unseen: a stopped instance's disk (stop, status) and a disk
kept after `down` (`--keep-volume`: down, status), each with its monthly list price. The real CLI against the
moto EC2 endpoint, instances behind loopback sshd hosts, as in tests/test_up_e2e.py."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from awsrun.cluster import disks
from awsrun.providers.aws_volumes import Ec2Volume
from tests.test_up_e2e import live, ok, status_json, up


def awsrun_volumes(ec2) -> list[dict]:
    return ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["awsrun:cluster"]}])["Volumes"]


def test_a_stopped_instance_shows_what_its_disk_still_costs_and_down_deletes_it(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--volume-gb", "150"))
    (instance,) = live(ec2)
    row = status_json(cli)["clusters"][0]["instances"][0]
    assert (row["disk_gb"], row["disk_usd_per_month"]) == (150, 12.0)  # 150 GB x $0.08 (us-east-1 gp3)

    stopped = ok(cli("stop"))
    assert ("compute billing ended; the 150 GB of disk still bills about $12.00/month (gp3 list price): "
            "`awsrun start` resumes, `awsrun down` ends it") in stopped.stderr
    shown = ok(cli("status"))
    assert (f"note: {instance['InstanceId']} is stopped, and its 150 GB disk still bills about $12.00/month "
            "(gp3 list price)") in shown.stderr
    assert "150 GB" in shown.stdout.splitlines()[1].split("\t")  # the disk column of its row

    down = ok(cli("down", "--yes"))
    assert "kept disk" not in down.stderr
    assert [v["State"] for v in awsrun_volumes(ec2)] in ([], ["deleting"])


def test_a_disk_kept_after_down_is_named_priced_and_listed_until_it_is_deleted(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--keep-volume"))
    (volume,) = awsrun_volumes(ec2)
    down = ok(cli("down", "--yes"))
    assert (f"kept disk {volume['VolumeId']} (100 GB): it bills about $8.00/month (gp3 list price) until deleted: "
            "`awsrun down --delete-disks` deletes it") in down.stderr
    assert [v["State"] for v in awsrun_volumes(ec2)] == ["available"]

    report = status_json(cli)
    assert report["clusters"] == []
    (left,) = report["left_disks"]
    assert (left["id"], left["cluster"], left["size_gb"], left["volume_type"], left["region"], left["usd_per_month"]) \
        == (volume["VolumeId"], "default", 100, "gp3", "us-east-1", 8.0)
    shown = ok(cli("status"))
    assert "# disks awsrun's instances left behind (kept after `down`): they bill until deleted" in shown.stdout
    assert f"{volume['VolumeId']}\tdefault\t" in shown.stdout
    assert "`awsrun down --delete-disks --cluster default` deletes a cluster's disks (your own)" in shown.stderr

    refused = cli("down", "--delete-disks")  # no terminal to confirm on
    assert refused.exit_code == 2 and "and every disk it kept: confirm with --yes" in refused.stderr, refused
    assert "awsrun down --yes --cluster default --delete-disks" in refused.stderr
    deleted = ok(cli("down", "--yes", "--delete-disks"))  # the cluster is gone; its disk is still found
    assert f"cluster 'default' is gone: deleted disk {volume['VolumeId']}" in deleted.stderr, deleted
    assert awsrun_volumes(ec2) == []
    assert status_json(cli)["left_disks"] == []
    assert "left behind" not in ok(cli("status")).stdout


def test_down_delete_disks_takes_the_kept_disk_with_its_instance(cli, ec2, fleet):
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge", "--keep-volume"))
    (instance,) = live(ec2)
    (volume,) = awsrun_volumes(ec2)
    down = ok(cli("down", "--yes", "--delete-disks"))
    assert f"terminated {instance['InstanceId']}" in down.stderr and f"deleted disk {volume['VolumeId']}" in down.stderr
    assert "kept disk" not in down.stderr
    assert awsrun_volumes(ec2) == [] and status_json(cli)["left_disks"] == []


def test_another_owners_disk_is_listed_never_deleted(cli, ec2, fleet):
    theirs = ec2.create_volume(AvailabilityZone="us-east-1a", Size=20, VolumeType="gp3", TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": "awsrun:cluster", "Value": "default"},
                                           {"Key": "awsrun:owner", "Value": "arn:aws:iam::210987654321:user/bob"}]}])
    ok(up(cli, "--on-demand", "--instance-type", "g4dn.xlarge"))
    (left,) = status_json(cli)["left_disks"]
    assert (left["id"], left["owner"], left["usd_per_month"]) == (theirs["VolumeId"], "arn:aws:iam::210987654321:user/bob", 1.6)
    ok(cli("down", "--yes", "--delete-disks"))
    assert [v["VolumeId"] for v in awsrun_volumes(ec2)] == [theirs["VolumeId"]]


def test_volumes_are_read_from_ec2s_answer():
    created = datetime(2026, 12, 1, tzinfo=timezone.utc)
    attached = Ec2Volume.from_api({
        "VolumeId": "vol-1", "Size": 100, "VolumeType": "gp3", "State": "in-use", "CreateTime": created,
        "Attachments": [{"InstanceId": "i-1", "State": "attached", "DeleteOnTermination": False}],
        "Tags": [{"Key": "awsrun:cluster", "Value": "train"}, {"Key": "awsrun:owner", "Value": "arn:me"}]})
    assert (attached.instance_id, attached.left_over) == ("i-1", False)
    assert (attached.cluster, attached.owner, attached.created_at) == ("train", "arn:me", created.timestamp())
    alone = Ec2Volume.from_api({"VolumeId": "vol-2", "Size": 8, "VolumeType": "gp2", "State": "available",
                                "Attachments": []})
    assert (alone.instance_id, alone.left_over, alone.cluster) == (None, True, None)


@pytest.mark.parametrize("size, volume_type, region, usd", [
    (100, "gp3", "us-east-1", 8.0),
    (100, "gp3", "eu-west-1", 8.8),
    (100, "gp3", "ap-south-1", None),   # a region the catalog does not price
    (100, "io2", "us-east-1", None),    # not what awsrun launches: not priced rather than mispriced
])
def test_monthly_price_of_a_disk(size, volume_type, region, usd):
    assert disks.monthly_usd(size, volume_type, region) == usd


def test_a_total_with_an_unknown_price_is_unknown_not_partial():
    def disk(usd):
        return disks.Disk("vol", "c", "o", 100, "gp3", "r", None, None, usd)

    assert disks.total_usd_per_month([disk(8.0), disk(8.8)]) == 16.8
    assert disks.total_usd_per_month([disk(8.0), disk(None)]) is None


def test_without_permission_to_list_disks_status_stop_and_down_still_work_and_say_so(aws, ec2, fleet, tmp_path):
    """An IAM policy made before awsrun read disks lacks ec2:DescribeVolumes: the disks go unsaid, nothing fails."""
    from awsrun.cluster import ops
    from awsrun.cluster.status import status
    from awsrun.home import Home
    from awsrun.progress import Silent
    from tests.test_aws_errors import Injector, run_up, settings

    home = Home(tmp_path / "home").ensure()
    run_up(home, Injector(), ssh_proxy_command=fleet.proxy_command, keep_volume=True)
    denied = Injector().error("DescribeVolumes", "UnauthorizedOperation",
                              "You are not authorized to perform this operation.")
    why = "disks in us-east-1 not checked: "
    report = status(home, settings(), aws=denied)
    assert [i.disk_gb for c in report.clusters for i in c.instances] == [None]
    assert [n for n in report.notes if n.startswith(why)], report.notes

    stopped = ops.stop(home, settings(), Silent(), aws=denied)
    assert stopped.changed and stopped.disks == () and stopped.disk_note.startswith(why)
    down = ops.down(home, settings(), Silent(), aws=denied, delete_disks=True)
    assert down.terminated and down.deleted_disks == () and down.disk_note.startswith(why)
    assert [v["State"] for v in awsrun_volumes(ec2)] == ["available"]  # kept, as asked at launch; not lost


def test_a_disk_another_down_deleted_meanwhile_is_not_an_error(aws, ec2):
    from awsrun.providers.aws import AwsProvider

    provider = AwsProvider("us-east-1", max_attempts=1)
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, VolumeType="gp3")["VolumeId"]
    provider.delete_volume(volume)
    provider.delete_volume(volume)  # two `down --delete-disks` at once: the second finds it gone
    assert [v for v in ec2.describe_volumes()["Volumes"] if v["VolumeId"] == volume] == []
