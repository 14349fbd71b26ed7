"""What bills while nothing runs: the EBS disks of awsrun's instances (a stopped instance still pays for its
disk) and those that outlive their instances (`up --keep-volume`, the old disk of a `start --move`), each
priced per month at the gp3 list price. One DescribeVolumes call per region, over awsrun's tags."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Iterable

from awsrun.errors import AwsrunError, ConfigError, NotFoundError
from awsrun.setup import catalog

if TYPE_CHECKING:
    from awsrun.home import Home

GONE = ("deleting", "deleted", "error")
_DISK_ID = re.compile(r"^vol-[0-9a-f]{8,17}\Z")
FREE = "available"  # EC2's state of a volume no instance uses: it bills until deleted


@dataclass(frozen=True)
class Disk:
    id: str
    cluster: str | None
    owner: str | None
    size_gb: int
    volume_type: str
    region: str
    state: str                       # EC2's: creating, in-use, available, ...
    instance_id: str | None          # the instance using it
    kept: bool                       # outlives its instance's termination (`down` leaves it)
    created_at: float | None
    usd_per_month: float | None      # the storage's list price; None where the catalog has none

    @property
    def left_behind(self) -> bool:
        return self.state == FREE


def monthly_usd(size_gb: int, volume_type: str, region: str) -> float | None:
    """gp3 storage only (what awsrun launches); its baseline IOPS and throughput cost nothing extra."""
    price = catalog.gp3_price(region) if volume_type == "gp3" else None
    return None if price is None else round(size_gb * price, 2)


def cluster_disks(provider, cluster: str | None = None, owner: str | None = None,
                  kept_ids: Collection[str] = ()) -> list[Disk]:
    """awsrun's disks in the provider's region: one cluster's (and one owner's), or every awsrun cluster's.
    `kept_ids`: the volumes the instances keep after termination (from their block device mappings)."""
    from awsrun.providers.aws_requests import cluster_filters

    return [Disk(v.id, v.cluster, v.owner, v.size_gb, v.volume_type, provider.region, v.state, v.instance_id,
                 v.state == FREE or v.id in kept_ids, v.created_at,
                 monthly_usd(v.size_gb, v.volume_type, provider.region))
            for v in provider.volumes(cluster_filters(cluster, owner)) if v.state not in GONE]


def disks_or_why_not(provider, cluster: str | None = None, owner: str | None = None,
                     kept_ids: Collection[str] = ()) -> tuple[list[Disk], str | None]:
    """cluster_disks, or no disks and the reason: what disks cost is information, never a reason for
    status, stop or down to fail (an IAM policy from before awsrun read disks lacks ec2:DescribeVolumes)."""
    try:
        return cluster_disks(provider, cluster, owner, kept_ids), None
    except AwsrunError as exc:
        return [], f"disks in {provider.region} not checked: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")


def by_instance(disks: Iterable[Disk]) -> dict[str, list[Disk]]:
    found: dict[str, list[Disk]] = {}
    for disk in disks:
        if disk.instance_id:
            found.setdefault(disk.instance_id, []).append(disk)
    return found


def total_usd_per_month(disks: Iterable[Disk]) -> float | None:
    """None when any disk's price is unknown: a partial sum would read as the whole bill."""
    prices = [disk.usd_per_month for disk in disks]
    return round(sum(prices), 2) if prices and None not in prices else None  # type: ignore[arg-type]


def deletable(provider, owner: str, disk_ids: list[str]) -> list[Disk]:
    """The caller's own left-behind awsrun disks among `disk_ids`, checked before any is deleted: one that
    is not awsrun's, is another owner's, or is still used by an instance refuses the whole request."""
    found = {d.id: d for d in cluster_disks(provider)}
    for disk_id in disk_ids:
        disk = found.get(disk_id)
        if disk is None:
            raise NotFoundError(f"no awsrun disk {disk_id} in {provider.region}",
                                hint="`awsrun status` lists the disks left behind, with their regions")
        if disk.owner != owner:
            raise ConfigError(f"disk {disk_id} belongs to {disk.owner or 'no awsrun owner'}, not to you: not deleted",
                              hint="only its owner's awsrun deletes it")
        if not disk.left_behind:
            user = f" by {disk.instance_id}" if disk.instance_id else ""
            raise ConfigError(f"disk {disk_id} is {disk.state}{user}, not left behind: not deleted",
                              hint="`awsrun down --delete-disks` deletes a cluster's disks with its instances")
    return [found[disk_id] for disk_id in dict.fromkeys(disk_ids)]


def find_deletable(region: str | None, disk_ids: list[str], aws=None):
    """(the disks, their region's provider): the caller's own left-behind disks, or an error naming why not."""
    from awsrun.cluster.context import default_aws

    for disk_id in disk_ids:
        if not _DISK_ID.match(disk_id):
            raise ConfigError(f"{disk_id!r} is not a disk id (like vol-0123456789abcdef0)",
                              hint="`awsrun status` lists the disks left behind")
    provider = (aws or default_aws)(region)
    return deletable(provider, provider.caller_arn(), disk_ids), provider


def delete_left_behind(home: Home, provider, disks: list[Disk]) -> None:
    from awsrun.cluster.context import open_state

    state = open_state(home)
    try:
        for disk in disks:
            provider.delete_volume(disk.id)
            state.forget_kept_disk(disk.id)
    finally:
        state.close()
