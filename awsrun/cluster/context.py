"""What a cluster command runs with and hands back: the Run context (home, settings, state, reporter, the
AWS provider factory, one Remote per machine), how it opens the state and an AWS provider, and the requests
and results of `up`, `stop`, `start` and `down`. The cluster use cases and the modules they lean on (nodes,
machines, autostop, failover) all import it; it imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from awsrun.account.prices import SessionCost
from awsrun.home import Home
from awsrun.progress import Reporter
from awsrun.remote.base import Remote
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, InstanceRecord, State

if TYPE_CHECKING:
    from awsrun.cluster import failover
    from awsrun.cluster.disks import Disk
    from awsrun.cluster import nodes as cluster_nodes
    from awsrun.providers.aws import AwsProvider

AwsFactory = Callable[[str | None], "AwsProvider"]  # boto3 is imported lazily: it is slow


def default_aws(region: str | None):
    from awsrun.providers.aws import AwsProvider

    return AwsProvider(region)


@dataclass(frozen=True)
class UpRequest:
    settings: Settings
    nodes: int | None = None           # None: as many as the cluster has (at least 1)
    bootstrap: bool = True
    local: bool = False
    hosts: tuple[str, ...] = ()
    explicit: frozenset[str] = frozenset()  # settings given as flags on this command line
    autostop_down: bool = False             # --autostop-down: the idle instance terminates instead of stopping
    autostop_gpu_idle: float | None = None  # --autostop-gpu-idle: a job whose GPUs stay below this % is idle
    on_partial: str = "rollback"            # a node cannot launch: rollback, continue, or ask `choose_partial`
    choose_partial: cluster_nodes.Chooser | None = None
    retry: "failover.Retry | None" = None   # --retry-until-up / --retry-for: rounds over the candidates


@dataclass(frozen=True)
class UpResult:
    cluster: ClusterRecord
    instances: tuple[InstanceRecord, ...]
    launched: tuple[str, ...] = ()
    started: tuple[str, ...] = ()
    ssh_cidr: str | None = None
    bootstrap_logs: tuple[Path, ...] = ()
    agents: tuple[tuple[str, str], ...] = ()  # (instance id, what the agent install did)
    attempts: tuple["failover.Attempt", ...] = ()  # where a new cluster was tried, in order
    notes: tuple[str, ...] = ()               # facts worth a line that are no fault (plain, not warnings)


@dataclass(frozen=True)
class ActionResult:
    cluster: ClusterRecord
    instances: tuple[InstanceRecord, ...]
    changed: tuple[str, ...] = ()
    costs: tuple[SessionCost, ...] = ()   # stop: what the sessions that ended cost
    disks: tuple[Disk, ...] = ()          # stop: the disks of the stopped instances, which still bill
    disk_note: str | None = None          # why the disks are not known, when EC2 would not list them


@dataclass(frozen=True)
class DownResult:
    cluster: str
    provider: str
    terminated: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    key_pairs: tuple[str, ...] = ()
    costs: tuple[SessionCost, ...] = ()   # what the sessions that ended cost
    ended_jobs: tuple[str, ...] = ()      # a local cluster's jobs that were still running
    kept_disks: tuple[Disk, ...] = ()     # disks that outlive their instances (`--keep-volume`) and bill on
    deleted_disks: tuple[Disk, ...] = ()  # those deleted on request (`down --delete-disks`)
    disk_note: str | None = None          # why the disks are not known, when EC2 would not list them


@dataclass
class Run:
    home: Home
    settings: Settings
    state: State
    reporter: Reporter
    aws: AwsFactory
    remotes: dict[str, Remote] = field(default_factory=dict)  # one connection per machine per command
    failover: "failover.Failover | None" = None  # a new cluster's walk over the candidates


def open_state(home: Home) -> State:
    home.ensure()
    return State.open(home.state_db)
