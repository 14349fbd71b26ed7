"""What awsrun reads from EC2's DescribeInstances (and RunInstances) answers: one Ec2Instance per instance,
its cluster, owner, node and launch token read from awsrun's tags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from awsrun.providers.aws_requests import (
    TAG_CLUSTER,
    TAG_LAUNCH_TOKEN,
    TAG_NODE,
    TAG_OWNER,
)


class AwsrunTagged:
    """The cluster and owner awsrun's tags name, on anything that has `tags`."""

    tags: Mapping[str, str]

    @property
    def cluster(self) -> str | None:
        return self.tags.get(TAG_CLUSTER)

    @property
    def owner(self) -> str | None:
        return self.tags.get(TAG_OWNER)


@dataclass(frozen=True)
class Ec2Instance(AwsrunTagged):
    """What awsrun reads from one DescribeInstances entry."""

    id: str
    state: str
    instance_type: str
    market: str
    zone: str | None
    public_ip: str | None
    private_ip: str | None
    launched_at: float | None
    key_name: str | None
    security_group_ids: tuple[str, ...]
    spot_request_id: str | None
    state_reason: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    kept_volume_ids: tuple[str, ...] = ()   # its EBS volumes that outlive its termination (DeleteOnTermination off)

    @property
    def launch_token(self) -> str | None:
        return self.tags.get(TAG_LAUNCH_TOKEN)

    @property
    def node(self) -> int:
        try:
            return int(self.tags.get(TAG_NODE, "0"))
        except ValueError:
            return 0

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> "Ec2Instance":
        launched = raw.get("LaunchTime")
        return cls(
            id=raw["InstanceId"],
            state=raw.get("State", {}).get("Name", "unknown"),
            instance_type=raw.get("InstanceType", ""),
            market="spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand",
            zone=raw.get("Placement", {}).get("AvailabilityZone"),
            public_ip=raw.get("PublicIpAddress"),
            private_ip=raw.get("PrivateIpAddress"),
            launched_at=launched.timestamp() if isinstance(launched, datetime) else None,
            key_name=raw.get("KeyName"),
            security_group_ids=tuple(g["GroupId"] for g in raw.get("SecurityGroups", []) if "GroupId" in g),
            spot_request_id=raw.get("SpotInstanceRequestId"),
            state_reason=(raw.get("StateReason") or {}).get("Message") or None,
            tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
            kept_volume_ids=tuple(m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", [])
                                  if "VolumeId" in m.get("Ebs", {}) and m["Ebs"].get("DeleteOnTermination") is False),
        )


def instances_of(reservations: Iterable[Mapping[str, Any]]) -> list[Ec2Instance]:
    return [Ec2Instance.from_api(i) for r in reservations for i in r.get("Instances", [])]
