"""Pure builders for the EC2 requests awsrun makes: names, tags and filters, the launch, spot prices and
scores, images. The security group, key pair and placement group: aws_network_requests.py; what EC2
describes: aws_instances.py.

No I/O and no boto3 here: every function turns plain values into the exact dict boto3 is called with,
so the tests compare whole requests for equality. Everything awsrun creates carries the same tags
(`awsrun:cluster`, `awsrun:owner`, ...) in the create call itself, so the cloud can always tell what is
ours even when the CLI died before writing its local state.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

from awsrun.errors import ConfigError

TAG_CLUSTER = "awsrun:cluster"
TAG_OWNER = "awsrun:owner"
TAG_NODE = "awsrun:node"
TAG_LAUNCH_TOKEN = "awsrun:launch-token"
TAG_MOVED_FROM = "awsrun:moved-from"   # on the image `start --move` makes of a stuck instance

# Cluster names end up in tag values, filter values, and the names of security groups, key pairs and
# placement groups (255 chars max, restricted alphabets). Letters, digits, '-', '_' fit all of them, and
# leave out '*' and '?', which EC2 filters read as wildcards: a cluster named '*' must never match
# every cluster's instances in `awsrun down`.
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}\Z")

UBUNTU_PARAMETER = "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
AMI_PARAMETERS = {"ubuntu": UBUNTU_PARAMETER, "dlami": DLAMI_PARAMETER}
_AMI_ID = re.compile(r"^ami-[0-9a-zA-Z]{1,64}\Z")


def validate_cluster_name(name: str) -> str:
    if not _CLUSTER_NAME.match(name or ""):
        raise ConfigError(
            f"cluster name {name!r} cannot be used",
            hint="use 1-40 letters, digits, '-' or '_', starting with a letter or digit",
        )
    return name


def filter_value(value: str) -> str:
    """EC2 filter values treat '*' and '?' as wildcards; escape them (and the escape) to match literally."""
    return value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def security_group_name(cluster: str, owner: str) -> str:
    """One group per cluster and owner: two people's clusters named 'default' stay apart."""
    return f"awsrun-{cluster}-{short_hash(owner)}"


def key_pair_name(cluster: str, public_key: str) -> str:
    """Named after the key itself, so a different local key never collides with an imported one."""
    blob = public_key.split()[1] if len(public_key.split()) > 1 else public_key
    return f"awsrun-{cluster}-{short_hash(blob)}"


def placement_group_name(cluster: str, owner: str) -> str:
    return f"awsrun-{cluster}-{short_hash(owner)}"


def instance_name(cluster: str, node: int) -> str:
    return f"awsrun-{cluster}-{node}"


def tags(cluster: str, owner: str, **extra: str) -> list[dict[str, str]]:
    """The tags of everything awsrun creates; `extra` adds e.g. Name, node, launch token."""
    pairs = {TAG_CLUSTER: cluster, TAG_OWNER: owner}
    for key, value in extra.items():
        pairs[{"name": "Name", "node": TAG_NODE, "launch_token": TAG_LAUNCH_TOKEN}[key]] = value
    return [{"Key": k, "Value": v} for k, v in pairs.items()]


def cluster_filters(cluster: str | None, owner: str | None = None) -> list[dict[str, Any]]:
    """Filters for what awsrun made: one cluster (or any awsrun cluster), optionally one owner's only."""
    if cluster is None:
        filters: list[dict[str, Any]] = [{"Name": "tag-key", "Values": [TAG_CLUSTER]}]
    else:
        filters = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [filter_value(cluster)]}]
    if owner is not None:
        filters.append({"Name": f"tag:{TAG_OWNER}", "Values": [filter_value(owner)]})
    return filters


@dataclass(frozen=True)
class LaunchSpec:
    """Everything one node's run_instances depends on."""

    cluster: str
    owner: str
    node: int
    launch_token: str
    instance_type: str
    image_id: str
    root_device_name: str
    volume_gb: int
    key_name: str
    security_group_id: str
    spot: bool = False
    max_price: float | None = None
    spot_can_stop: bool = True  # EBS-backed root: a persistent request that stops instead of terminating
    keep_volume: bool = False
    zone: str | None = None
    placement_group: str | None = None
    shutdown_behavior: str = "stop"  # what a shutdown from the OS does: "terminate" for --autostop-down


def run_instances_request(spec: LaunchSpec) -> dict[str, Any]:
    node_tags = tags(spec.cluster, spec.owner, name=instance_name(spec.cluster, spec.node),
                     node=str(spec.node), launch_token=spec.launch_token)
    request: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": spec.key_name,
        "SecurityGroupIds": [spec.security_group_id],
        # The launch token doubles as EC2's idempotency token: botocore's retry of a RunInstances whose
        # answer was lost returns the same instance instead of launching a second one.
        "ClientToken": spec.launch_token,
        "BlockDeviceMappings": [{
            "DeviceName": spec.root_device_name,
            "Ebs": {
                "VolumeSize": spec.volume_gb,
                "VolumeType": "gp3",
                "Encrypted": True,
                "DeleteOnTermination": not spec.keep_volume,
            },
        }],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
        "InstanceInitiatedShutdownBehavior": shutdown_behavior(spec.shutdown_behavior),
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": node_tags},
            {"ResourceType": "volume", "Tags": node_tags},
        ],
    }
    placement: dict[str, str] = {}
    if spec.zone:
        placement["AvailabilityZone"] = spec.zone
    if spec.placement_group:
        placement["GroupName"] = spec.placement_group
    if placement:
        request["Placement"] = placement
    if spec.spot:
        request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot_options(spec)}
        # tagged in the same call, as the instance is: infra/iam-policy.json lets awsrun cancel only tagged ones
        request["TagSpecifications"].append({"ResourceType": "spot-instances-request", "Tags": node_tags})
    return request


def create_role_request(name: str, trust_policy: str, boundary_arn: str) -> dict[str, Any]:
    """A role EC2 may assume, capped by awsrun's permissions boundary: infra/iam-policy.json allows
    CreateRole and PutRolePolicy only with that boundary, so whatever inline policy the role gets, it can
    never do more than the boundary (infra/iam-boundary-policy.json) allows."""
    return {"RoleName": name, "AssumeRolePolicyDocument": trust_policy, "PermissionsBoundary": boundary_arn,
            "Description": "awsrun: a job's checkpoint mirror to S3", "Tags": [{"Key": "awsrun", "Value": "true"}]}


def persistent_spot(spec: LaunchSpec) -> bool:
    """A persistent request with interruption behaviour stop, when the launch allows it."""
    # A persistent request relaunches an instance that terminates, so an instance that is meant to
    # terminate itself (--autostop-down) gets a one-time request.
    return spec.spot and spec.spot_can_stop and spec.shutdown_behavior == "stop"


def spot_options(spec: LaunchSpec) -> dict[str, Any]:
    # A persistent request that stops on interruption keeps the disk and lets `awsrun stop` work;
    # EC2 accepts "persistent" with RunInstances only together with stop or hibernate
    # (API reference, SpotMarketOptions). Without an EBS root it has to be one-time + terminate.
    if persistent_spot(spec):
        options: dict[str, Any] = {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}
    else:
        options = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
    if spec.max_price is not None:
        options["MaxPrice"] = format_price(spec.max_price)
    return options


def shutdown_behavior(value: str) -> str:
    if value not in ("stop", "terminate"):
        raise ConfigError(f"shutdown behaviour {value!r} is neither 'stop' nor 'terminate'")
    return value


def shutdown_behavior_request(instance_id: str, behavior: str) -> dict[str, Any]:
    """ModifyInstanceAttribute: what a shutdown from inside the instance does (the agent's autostop)."""
    return {"InstanceId": instance_id, "Attribute": "instanceInitiatedShutdownBehavior",
            "Value": shutdown_behavior(behavior)}


def spot_price_history_request(instance_types: Iterable[str], zone: str | None, now: datetime) -> dict[str, Any]:
    """The current spot price per zone: with StartTime now, EC2 returns the price in effect now
    (the latest entry) for each type and zone (API reference, DescribeSpotPriceHistory)."""
    request: dict[str, Any] = {"InstanceTypes": sorted(set(instance_types)), "ProductDescriptions": ["Linux/UNIX"],
                               "StartTime": now}
    if zone:
        request["AvailabilityZone"] = zone
    return request


def latest_spot_prices(entries: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{type: {zone: USD/hour}} from SpotPriceHistory entries, the newest entry per type and zone."""
    latest: dict[tuple[str, str], tuple[datetime | None, float]] = {}
    for entry in entries:
        key = (entry["InstanceType"], entry["AvailabilityZone"])
        when, seen = entry.get("Timestamp"), latest.get(key)
        if seen is None or (when is not None and (seen[0] is None or when > seen[0])):
            latest[key] = (when, float(entry["SpotPrice"]))
    table: dict[str, dict[str, float]] = {}
    for (instance_type, zone), (_, price) in sorted(latest.items()):
        table.setdefault(instance_type, {})[zone] = price
    return table


def spot_placement_scores_request(instance_type: str, region: str) -> dict[str, Any]:
    """GetSpotPlacementScores for one instance in each zone of one region: how likely a spot request
    succeeds there now, 1-10 (API reference, GetSpotPlacementScores)."""
    return {"InstanceTypes": [instance_type], "TargetCapacity": 1, "TargetCapacityUnitType": "units",
            "SingleAvailabilityZone": True, "RegionNames": [region]}


def scores_by_zone(entries: Iterable[Mapping[str, Any]], zone_names: Mapping[str, str]) -> dict[str, int]:
    """{zone name: score} from SpotPlacementScores entries, which name zones by id (use1-az4)."""
    return {zone_names[e["AvailabilityZoneId"]]: int(e["Score"]) for e in entries
            if e.get("AvailabilityZoneId") in zone_names and e.get("Score") is not None}


def move_image_request(instance_id: str, cluster: str, owner: str) -> dict[str, Any]:
    """CreateImage of a stopped instance, for `start --move`: its root volume's snapshot, bootable in another
    zone. Named after the instance (image names are unique per account: a second try finds the first)."""
    name = f"awsrun-{cluster}-move-{instance_id}"
    return {
        "InstanceId": instance_id,
        "Name": name,
        "Description": f"awsrun: the disk of {instance_id} (cluster {cluster}), moving to another zone",
        "TagSpecifications": [{"ResourceType": kind, "Tags": tags(cluster, owner, name=name)
                               + [{"Key": TAG_MOVED_FROM, "Value": instance_id}]} for kind in ("image", "snapshot")],
    }


def format_price(usd: float) -> str:
    """EC2 wants the price as a decimal string; never scientific notation."""
    text = f"{usd:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def ami_parameter(ami: str) -> str | None:
    """The public SSM parameter for an AMI alias; None for an explicit ami-... id."""
    if ami in AMI_PARAMETERS:
        return AMI_PARAMETERS[ami]
    if _AMI_ID.match(ami):
        return None
    raise ConfigError(f"--ami {ami!r} is neither 'ubuntu', 'dlami' nor an ami-... id")
