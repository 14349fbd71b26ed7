"""Use case: status. Reconciles every AWS cluster with EC2, prices what runs, and finds orphans:
instances tagged `awsrun:cluster` that the state does not know. The caller's own orphans are adopted
back into the state (so `awsrun down` can remove them); other owners' are listed, never touched.
Each cluster's autostop setting comes from the state; with `agent=True`, when it fires comes from the
agent on each running node (one SSH connection per node, so plain `status` stays cloud-only)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from awsrun.account.prices import PriceBook
from awsrun.errors import AwsrunError
from awsrun.home import Home
from awsrun.job.projects import ProjectDir, project_dirs
from awsrun.settings import Settings
from awsrun.setup.agent import CONFIG_KEY, Autostop
from awsrun.state import ClusterRecord, InstanceRecord, State

if TYPE_CHECKING:
    from awsrun.cluster.context import AwsFactory
    from awsrun.cluster.disks import Disk

# The cloud side (awsrun.cluster.up, aws_cluster, autostop, keys, the providers' builders) and the error
# path's helpers are imported inside the functions that need them: `status --cached` never calls the
# cloud, and starts about twice as fast without them.


@dataclass(frozen=True)
class InstanceStatus:
    id: str
    node: int
    instance_type: str | None
    market: str | None
    state: str
    public_ip: str | None
    private_ip: str | None
    zone: str | None
    launched_at: float | None
    uptime_s: float | None
    hourly_usd: float | None
    price_source: str | None
    cost_usd: float | None
    adopted: bool = False
    agent: dict | None = None   # with --agent: what the agent says (fires_at, idle_since, running_jobs, ...)
    disk_gb: int | None = None          # its EBS disks (None: not asked, or not an EC2 instance)
    disk_usd_per_month: float | None = None
    disk_kept: bool = False             # a disk of it outlives `down` (up --keep-volume)
    interrupted: bool = False           # stopped by a spot interruption: only EC2 (or `start --move`) restarts it


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    provider: str
    region: str | None
    instances: tuple[InstanceStatus, ...]
    cost_usd: float | None
    autostop: dict | None = None       # {"idle_seconds", "down", "count_ssh_users"}; None: never set
    autostop_label: str = "off"
    projects: tuple[ProjectDir, ...] = ()  # the remote directories of its jobs, and their local projects


@dataclass(frozen=True)
class Orphan:
    id: str
    cluster: str | None
    owner: str | None
    state: str
    instance_type: str
    region: str
    adopted: bool


@dataclass(frozen=True)
class StatusReport:
    clusters: tuple[ClusterStatus, ...]
    orphans: tuple[Orphan, ...]
    notes: tuple[str, ...] = ()
    left_disks: tuple[Disk, ...] = ()   # awsrun's disks no instance uses: they bill until deleted

    def to_json(self) -> dict:
        return asdict(self)


class _Providers:
    """One provider and one caller identity per region, made on first use."""

    def __init__(self, aws: AwsFactory):
        self.aws = aws
        self._by_region: dict[str | None, tuple[object, str]] = {}

    def get(self, region: str | None, quick: bool = False):
        if region not in self._by_region:
            provider = self.aws(region)
            if quick:
                provider = provider.quick()
            self._by_region[region] = (provider, provider.caller_arn())
        return self._by_region[region]


def status(home: Home, settings: Settings, cluster: str | None = None, aws: AwsFactory | None = None,
           now: float | None = None, agent: bool = False, cached: bool = False) -> StatusReport:
    from awsrun.cluster import autostop, disks, ec2
    from awsrun.cluster.access import cluster_not_found
    from awsrun.cluster.move import stopped_by_interruption
    from awsrun.cluster.context import default_aws
    from awsrun.providers.aws_requests import validate_cluster_name

    now = time.time() if now is None else now
    if cluster is not None:
        validate_cluster_name(cluster)
    if cached:
        return cached_status(home, cluster, now)
    state = _open_state(home)
    providers = _Providers(aws or default_aws)
    try:
        recorded = state.clusters()
        adopted: set[str] = set()
        for record in recorded:
            if record.provider == "aws" and cluster in (None, record.name):
                provider, owner = providers.get(record.region)
                adopted |= set(ec2.reconcile(state, provider, record, owner).adopted)
        orphans, found_disks, notes, seen = _orphans_and_disks(home, state, settings, providers, recorded)
        adopted |= {o.id for o in orphans if o.adopted}
        clusters = [c for c in state.clusters() if cluster in (None, c.name)]
        if cluster is not None and not clusters:
            raise cluster_not_found(state, cluster)
        prices = PriceBook(lambda region: providers.get(region)[0])
        report = []
        for record in clusters:
            instances = state.instances(record.name)
            agents = autostop.agent_reports(home, settings, record, instances) \
                if agent and record.provider == "aws" else {}
            report.append(_cluster_status(record, instances, prices, adopted, now, agents,
                                          project_dirs(home, state.jobs(record.name)), disks.by_instance(found_disks),
                                          {i for i, instance in seen.items() if stopped_by_interruption(instance)}))
        return StatusReport(tuple(report), tuple(orphans), tuple(notes + prices.notes),
                            tuple(d for d in found_disks if d.left_behind))
    finally:
        state.close()


def _open_state(home: Home) -> State:
    home.ensure()
    return State.open(home.state_db)


class _ListPricesOnly:
    """For `status --cached`: no cloud call, so no spot price; PriceBook falls back to the list price."""

    def spot_prices(self, instance_type: str) -> dict[str, float]:
        return {}


def cached_status(home: Home, cluster: str | None = None, now: float | None = None) -> StatusReport:
    """What the local state last recorded, priced at list prices: no cloud call, no orphan scan."""
    now = time.time() if now is None else now
    state = _open_state(home)
    try:
        clusters = [c for c in state.clusters() if cluster in (None, c.name)]
        if cluster is not None and not clusters:
            from awsrun.cluster.access import cluster_not_found

            raise cluster_not_found(state, cluster)
        prices = PriceBook(lambda region: _ListPricesOnly())
        report = tuple(_cluster_status(c, state.instances(c.name), prices, set(), now, {},
                                       project_dirs(home, state.jobs(c.name))) for c in clusters)
        return StatusReport(report, (), ("from the local state (--cached): `awsrun status` asks the cloud",))
    finally:
        state.close()


def _orphans_and_disks(home: Home, state: State, settings: Settings, providers: _Providers,
                       recorded: list[ClusterRecord]) -> tuple[list[Orphan], list[Disk], list[str], dict]:
    """Scan the regions of the AWS clusters and of the disks kept after their clusters, and the default region
    when the state knows no cluster at all (a lost state.db is when orphans matter most), for instances the
    state lost and for awsrun's disks. Returns the orphans, the disks, notes, and every awsrun instance
    seen (by id). Local-only states without kept disks skip the cloud."""
    from awsrun.cluster.disks import disks_or_why_not
    from awsrun.providers.aws_requests import cluster_filters

    cluster_regions = {c.region for c in recorded if c.provider == "aws"}
    remembered = state.kept_disk_regions()
    regions = cluster_regions | set(remembered) | (set() if recorded else {settings.region})
    orphans: list[Orphan] = []
    found_disks: list[Disk] = []
    notes: list[str] = []
    seen: dict = {}
    scanned: set[str] = set()
    known = {i.id for i in state.instances()}
    for region in sorted(regions, key=str):
        try:
            provider, owner = providers.get(region, quick=region not in cluster_regions)
            if provider.region in scanned:  # the default region (None) named again
                continue
            scanned.add(provider.region)
            tagged = [i for i in provider.describe(cluster_filters(None)) if i.state != "terminated"]
        except AwsrunError as exc:
            if region in cluster_regions:
                raise
            notes.append(f"awsrun instances in AWS not checked: {exc.message}")
            continue
        seen.update((i.id, i) for i in tagged)
        region_disks, why_not = disks_or_why_not(provider, kept_ids={v for i in tagged for v in i.kept_volume_ids})
        found_disks += region_disks
        if why_not:
            notes.append(why_not)
        else:
            _remember_left_behind(state, provider.region, region_disks, remembered.get(provider.region, set()))
        for instance in tagged:
            if instance.id in known:
                continue
            adopted = instance.owner == owner and _adopt(home, state, settings, provider.region, instance)
            orphans.append(Orphan(instance.id, instance.cluster, instance.owner, instance.state,
                                  instance.instance_type, provider.region, adopted))
    return orphans, found_disks, notes, seen


def _remember_left_behind(state: State, region: str, listed: list[Disk], remembered: set[str]) -> None:
    """Keep the regions of left-behind disks in the state, so that `status` looks there again after their
    clusters (and the regions those named) are gone; forget those no longer there."""
    for disk in listed:
        if disk.left_behind and disk.id not in remembered:
            state.remember_kept_disk(disk.id, region, disk.cluster)
    for gone in remembered - {d.id for d in listed if d.left_behind}:
        state.forget_kept_disk(gone)


def _adopt(home: Home, state: State, settings: Settings, region: str, instance) -> bool:
    from awsrun.cluster import ec2
    from awsrun.providers.aws_requests import validate_cluster_name

    name = instance.cluster or ""
    try:
        validate_cluster_name(name)
    except AwsrunError:
        return False
    cluster = state.get_cluster(name)
    if cluster is None:
        config = {"owner": instance.owner, "adopted": True, "key_name": instance.key_name,
                  "security_group_id": (instance.security_group_ids or (None,))[0]}
        ssh_key = _key_for(home, settings, name, instance.key_name)
        if ssh_key:
            config["ssh_key"] = ssh_key
        cluster = ClusterRecord(name, "aws", region, {k: v for k, v in config.items() if v is not None})
        state.put_cluster(cluster)
    if cluster.provider != "aws" or cluster.region != region:
        return False
    state.put_instance(ec2.record_from(instance, name))
    return True


def _key_for(home: Home, settings: Settings, cluster: str, key_name: str | None) -> str | None:
    """The private key behind an adopted instance's key pair, if it is one this machine has."""
    from awsrun.cluster import keys
    from awsrun.providers.aws_requests import key_pair_name

    candidates = [settings.ssh_key] if settings.ssh_key else []
    if (home.keys_dir / keys.GENERATED_NAME).exists():
        candidates.append(str(home.keys_dir / keys.GENERATED_NAME))
    for path in candidates:
        try:
            if key_pair_name(cluster, keys.resolve_key(home, path).public_key) == key_name:
                return path
        except AwsrunError:
            continue
    return None


def _cluster_status(cluster: ClusterRecord, records: list[InstanceRecord], prices: PriceBook, adopted: set[str],
                    now: float, agents: dict[str, dict], projects: tuple[ProjectDir, ...] = (),
                    disks_of: dict[str, list[Disk]] | None = None, interrupted: set[str] | None = None) -> ClusterStatus:
    from awsrun.cluster.disks import total_usd_per_month

    rows = []
    for record in records:
        hourly, source = prices.hourly(cluster.region, record.instance_type, record.market, record.zone) \
            if cluster.provider == "aws" else (None, None)
        running = cluster.provider == "aws" and record.state == "running" and record.launched_at
        uptime = max(0.0, now - record.launched_at) if running else (0.0 if cluster.provider == "aws" else None)
        cost = round(uptime / 3600 * hourly, 4) if hourly is not None and uptime is not None else None
        own_disks = (disks_of or {}).get(record.id)
        rows.append(InstanceStatus(
            id=record.id, node=record.node, instance_type=record.instance_type, market=record.market,
            state=record.state, public_ip=record.public_ip, private_ip=record.private_ip, zone=record.zone,
            launched_at=record.launched_at, uptime_s=uptime, hourly_usd=hourly, price_source=source,
            cost_usd=cost, adopted=record.id in adopted, agent=agents.get(record.id),
            disk_gb=sum(d.size_gb for d in own_disks) if own_disks else None,
            disk_usd_per_month=total_usd_per_month(own_disks) if own_disks else None,
            disk_kept=any(d.kept for d in own_disks or ()),
            interrupted=record.id in (interrupted or set()),
        ))
    costs = [r.cost_usd for r in rows if r.cost_usd is not None]
    setting = Autostop.from_config(cluster.config.get(CONFIG_KEY))
    return ClusterStatus(cluster.name, cluster.provider, cluster.region, tuple(rows),
                         round(sum(costs), 4) if costs else None,
                         setting.as_config() if setting else None, setting.describe() if setting else "off",
                         projects)
