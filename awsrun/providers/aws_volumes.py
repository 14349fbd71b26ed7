"""What awsrun reads from EC2's DescribeVolumes answers: the disks of its instances, and those that outlived
them (`--keep-volume`), which bill until someone deletes them."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from awsrun.providers.aws_instances import AwsrunTagged


@dataclass(frozen=True)
class Ec2Volume(AwsrunTagged):
    id: str
    size_gb: int
    volume_type: str
    state: str                          # creating, available, in-use, deleting, ...
    instance_id: str | None             # attached to; None when no instance uses it
    created_at: float | None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> "Ec2Volume":
        attached = [a for a in raw.get("Attachments", []) if a.get("State") in ("attaching", "attached", None)]
        created = raw.get("CreateTime")
        return cls(
            id=raw["VolumeId"],
            size_gb=int(raw.get("Size") or 0),
            volume_type=raw.get("VolumeType", ""),
            state=raw.get("State", "unknown"),
            instance_id=attached[0].get("InstanceId") if attached else None,
            created_at=created.timestamp() if isinstance(created, datetime) else None,
            tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
        )
