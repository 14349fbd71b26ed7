"""The pure request builders: whole requests compared for equality, hostile names refused or escaped."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from awsrun.errors import ConfigError
from awsrun.providers import aws_network_requests as net
from awsrun.providers import aws_requests as req
from awsrun.providers.aws_instances import Ec2Instance
from awsrun.providers.aws_requests import LaunchSpec

OWNER = "arn:aws:iam::123456789012:user/alice"
TOKEN = "0123456789abcdef0123456789abcdef"
TAGS = [
    {"Key": "awsrun:cluster", "Value": "train"},
    {"Key": "awsrun:owner", "Value": OWNER},
    {"Key": "Name", "Value": "awsrun-train-0"},
    {"Key": "awsrun:node", "Value": "0"},
    {"Key": "awsrun:launch-token", "Value": TOKEN},
]


def spec(**changes) -> LaunchSpec:
    base = LaunchSpec(
        cluster="train", owner=OWNER, node=0, launch_token=TOKEN, instance_type="g4dn.xlarge",
        image_id="ami-0ubuntu2204a", root_device_name="/dev/sda1", volume_gb=100, key_name="awsrun-train-1a2b3c4d",
        security_group_id="sg-0123",
    )
    return LaunchSpec(**{**base.__dict__, **changes})


def test_on_demand_request_in_full():
    assert req.run_instances_request(spec()) == {
        "ImageId": "ami-0ubuntu2204a",
        "InstanceType": "g4dn.xlarge",
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": "awsrun-train-1a2b3c4d",
        "SecurityGroupIds": ["sg-0123"],
        "ClientToken": TOKEN,
        "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
            "VolumeSize": 100, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
        "InstanceInitiatedShutdownBehavior": "stop",
        "TagSpecifications": [{"ResourceType": "instance", "Tags": TAGS}, {"ResourceType": "volume", "Tags": TAGS}],
    }


def test_spot_is_one_branch_persistent_stop_with_max_price():
    on_demand = req.run_instances_request(spec())
    spot = req.run_instances_request(spec(spot=True, max_price=0.35, instance_type="p2.xlarge"))
    assert spot == {**on_demand, "InstanceType": "p2.xlarge", "InstanceMarketOptions": {
        "MarketType": "spot",
        "SpotOptions": {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop", "MaxPrice": "0.35"},
    }, "TagSpecifications": [*on_demand["TagSpecifications"],  # the spot request is tagged on create too
                             {"ResourceType": "spot-instances-request", "Tags": TAGS}]}


def test_spot_without_max_price_and_without_an_ebs_root():
    assert req.run_instances_request(spec(spot=True))["InstanceMarketOptions"] == {
        "MarketType": "spot", "SpotOptions": {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}}
    assert req.run_instances_request(spec(spot=True, spot_can_stop=False))["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}


def test_zone_placement_group_and_kept_volume():
    request = req.run_instances_request(spec(zone="us-east-1b", placement_group="awsrun-train-pg", keep_volume=True,
                                             volume_gb=500, root_device_name="/dev/xvda"))
    assert request["Placement"] == {"AvailabilityZone": "us-east-1b", "GroupName": "awsrun-train-pg"}
    assert request["BlockDeviceMappings"] == [{"DeviceName": "/dev/xvda", "Ebs": {
        "VolumeSize": 500, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": False}}]


@pytest.mark.parametrize("usd, text", [(0.5, "0.5"), (1e-05, "0.00001"), (3.0, "3"), (0.1234567, "0.123457")])
def test_prices_are_plain_decimal_strings(usd, text):
    assert req.format_price(usd) == text


def test_security_group_and_its_rules():
    assert net.security_group_request("train", OWNER, "vpc-1") == {
        "GroupName": f"awsrun-train-{req.short_hash(OWNER)}",
        "Description": "awsrun cluster train: SSH from one address, all traffic between its nodes",
        "VpcId": "vpc-1",
        "TagSpecifications": [{"ResourceType": "security-group", "Tags": [
            {"Key": "awsrun:cluster", "Value": "train"}, {"Key": "awsrun:owner", "Value": OWNER},
            {"Key": "Name", "Value": f"awsrun-train-{req.short_hash(OWNER)}"}]}],
    }
    assert net.ssh_ingress_request("sg-1", "203.0.113.7/32") == {"GroupId": "sg-1", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "203.0.113.7/32", "Description": "awsrun: SSH"}]}]}
    assert net.ssh_ingress_request("sg-1", "2001:db8::1/128") == {"GroupId": "sg-1", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "Ipv6Ranges": [{"CidrIpv6": "2001:db8::1/128", "Description": "awsrun: SSH"}]}]}
    assert net.nodes_ingress_request("sg-1") == {"GroupId": "sg-1", "IpPermissions": [
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-1", "Description": "awsrun: nodes of this cluster"}]}]}


def test_two_owners_and_two_keys_never_share_a_name():
    assert req.security_group_name("default", OWNER) != req.security_group_name("default", OWNER + "2")
    first, second = "ssh-ed25519 AAAAfirst awsrun", "ssh-ed25519 AAAAsecond awsrun"
    assert req.key_pair_name("default", first) == f"awsrun-default-{req.short_hash('AAAAfirst')}"
    assert req.key_pair_name("default", first) == req.key_pair_name("default", "ssh-ed25519 AAAAfirst other-comment")
    assert req.key_pair_name("default", first) != req.key_pair_name("default", second)


def test_key_pair_and_placement_group_requests():
    assert net.import_key_pair_request("awsrun-train-1", "ssh-ed25519 AAAA awsrun\n", "train", OWNER) == {
        "KeyName": "awsrun-train-1", "PublicKeyMaterial": b"ssh-ed25519 AAAA awsrun",
        "TagSpecifications": [{"ResourceType": "key-pair", "Tags": [
            {"Key": "awsrun:cluster", "Value": "train"}, {"Key": "awsrun:owner", "Value": OWNER},
            {"Key": "Name", "Value": "awsrun-train-1"}]}]}
    name = f"awsrun-train-{req.short_hash(OWNER)}"
    assert net.placement_group_request("train", OWNER) == {
        "GroupName": name, "Strategy": "cluster", "TagSpecifications": [{"ResourceType": "placement-group", "Tags": [
            {"Key": "awsrun:cluster", "Value": "train"}, {"Key": "awsrun:owner", "Value": OWNER},
            {"Key": "Name", "Value": name}]}]}


def test_tag_filters_match_literally():
    assert req.cluster_filters("train", OWNER) == [
        {"Name": "tag:awsrun:cluster", "Values": ["train"]}, {"Name": "tag:awsrun:owner", "Values": [OWNER]}]
    assert req.cluster_filters(None) == [{"Name": "tag-key", "Values": ["awsrun:cluster"]}]
    # '*' and '?' are EC2 filter wildcards: escaped, a value can only ever match itself
    assert req.filter_value("a*b?c\\") == "a\\*b\\?c\\\\"
    assert req.cluster_filters("*", "?")[0]["Values"] == ["\\*"]


@pytest.mark.parametrize("name", ["default", "train-1", "A_b-9", "x" * 40])
def test_cluster_names_that_fit_every_aws_name(name):
    assert req.validate_cluster_name(name) == name


@pytest.mark.parametrize("name", [
    "", "*", "prod*", "p?", "-x", "_x", "a b", "../etc", "a/b", "ü", "a;rm -rf ~", "$(id)", "`id`", "a\nb",
    "x" * 41, "a:b", "a.b", "'quoted'",
])
def test_hostile_cluster_names_are_refused(name):
    with pytest.raises(ConfigError, match="cannot be used") as raised:
        req.validate_cluster_name(name)
    assert "letters, digits" in raised.value.hint


def test_cidrs():
    assert net.parse_cidr("203.0.113.7") == "203.0.113.7/32"
    assert net.parse_cidr(" 198.51.100.0/24 ") == "198.51.100.0/24"
    assert net.parse_cidr("2001:db8::1") == "2001:db8::1/128"
    with pytest.raises(ConfigError) as raised:
        net.parse_cidr("203.0.113.7/24")
    assert raised.value.hint == "did you mean 203.0.113.0/24?"
    with pytest.raises(ConfigError, match="not a usable CIDR"):
        net.parse_cidr("my-laptop")


def test_ami_aliases_resolve_through_public_parameters():
    assert req.ami_parameter("ubuntu") == "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"
    assert req.ami_parameter("dlami") == \
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
    assert req.ami_parameter("ami-0abc123") is None
    with pytest.raises(ConfigError, match="neither"):
        req.ami_parameter("ami-; rm -rf /")


def test_describe_instances_entry_is_parsed():
    raw = {
        "InstanceId": "i-1", "State": {"Name": "running"}, "InstanceType": "p2.xlarge", "InstanceLifecycle": "spot",
        "Placement": {"AvailabilityZone": "us-east-1a"}, "PublicIpAddress": "54.1.2.3", "PrivateIpAddress": "10.0.0.5",
        "LaunchTime": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "KeyName": "k",
        "SecurityGroups": [{"GroupId": "sg-1", "GroupName": "g"}], "SpotInstanceRequestId": "sir-1",
        "Tags": [{"Key": "awsrun:cluster", "Value": "train"}, {"Key": "awsrun:node", "Value": "2"},
                 {"Key": "awsrun:owner", "Value": OWNER}, {"Key": "awsrun:launch-token", "Value": TOKEN}],
    }
    instance = Ec2Instance.from_api(raw)
    assert instance == Ec2Instance(
        id="i-1", state="running", instance_type="p2.xlarge", market="spot", zone="us-east-1a",
        public_ip="54.1.2.3", private_ip="10.0.0.5", launched_at=raw["LaunchTime"].timestamp(), key_name="k",
        security_group_ids=("sg-1",), spot_request_id="sir-1", state_reason=None, tags=instance.tags)
    assert (instance.cluster, instance.node, instance.owner, instance.launch_token) == ("train", 2, OWNER, TOKEN)
    assert Ec2Instance.from_api({"InstanceId": "i-2"}).market == "on-demand"
