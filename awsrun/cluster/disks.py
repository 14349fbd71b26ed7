"""What bills while nothing runs: the EBS disks of awsrun's instances (a stopped instance still pays for its
disk) and those its instances left behind (`--keep-volume`), each priced per month at the gp3 list price.
One DescribeVolumes call per region, over awsrun's tags."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from awsrun.errors import AwsrunError
from awsrun.setup import catalog

GONE = ("deleting", "deleted", "error")


@dataclass(frozen=True)
class Disk:
    id: str
    cluster: str | None
    owner: str | None
    size_gb: int
    volume_type: str
    region: str
    instance_id: str | None          # the instance it belongs to; None: left behind, billed until deleted
    created_at: float | None
    usd_per_month: float | None      # the storage's list price; None where the catalog has none


def monthly_usd(size_gb: int, volume_type: str, region: str) -> float | None:
    """gp3 storage only (what awsrun launches); its baseline IOPS and throughput cost nothing extra."""
    price = catalog.gp3_price(region) if volume_type == "gp3" else None
    return None if price is None else round(size_gb * price, 2)


def cluster_disks(provider, cluster: str | None = None, owner: str | None = None) -> list[Disk]:
    """awsrun's disks in the provider's region: one cluster's (and one owner's), or every awsrun cluster's."""
    from awsrun.providers.aws_requests import cluster_filters

    return [Disk(v.id, v.cluster, v.owner, v.size_gb, v.volume_type, provider.region,
                 None if v.left_over else v.instance_id, v.created_at, monthly_usd(v.size_gb, v.volume_type, provider.region))
            for v in provider.volumes(cluster_filters(cluster, owner)) if v.state not in GONE]


def disks_or_why_not(provider, cluster: str | None = None, owner: str | None = None) -> tuple[list[Disk], str | None]:
    """cluster_disks, or no disks and the reason: what disks cost is information, never a reason for
    status, stop or down to fail (an IAM policy from before awsrun read disks lacks ec2:DescribeVolumes)."""
    try:
        return cluster_disks(provider, cluster, owner), None
    except AwsrunError as exc:
        return [], f"disks in {provider.region} not checked: {exc.message}"


def by_instance(disks: Iterable[Disk]) -> dict[str, list[Disk]]:
    found: dict[str, list[Disk]] = {}
    for disk in disks:
        if disk.instance_id:
            found.setdefault(disk.instance_id, []).append(disk)
    return found


def left_behind(disks: Iterable[Disk]) -> list[Disk]:
    return [disk for disk in disks if disk.instance_id is None]


def total_usd_per_month(disks: Iterable[Disk]) -> float | None:
    """None when any disk's price is unknown: a partial sum would read as the whole bill."""
    prices = [disk.usd_per_month for disk in disks]
    return round(sum(prices), 2) if prices and None not in prices else None  # type: ignore[arg-type]
