"""Autostop on EC2 clusters: the setting recorded on the cluster, the instances' shutdown behaviour, and
the agent's config on each running node. Used by `up`, `start`, `awsrun autostop` and `status --agent`.

The agent (infra/awsrun-agent.py) only halts the OS; what that does is EC2's
InstanceInitiatedShutdownBehavior: stop (the default, the disk stays) or terminate (--autostop-down).
A persistent spot request relaunches an instance that terminates, so `--down` on a persistent spot
instance cancels its request first: an interruption then ends the instance instead of stopping it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from awsrun.errors import AwsrunError, ConfigError, NotFoundError, RemoteError
from awsrun.home import Home
from awsrun.progress import Reporter
from awsrun.remote.base import Remote
from awsrun.settings import Settings
from awsrun.setup.agent import (
    CONFIG_KEY,
    AgentInstall,
    Autostop,
    agent_status,
    install_agent,
    parse_duration,
)
from awsrun.state import ClusterRecord, InstanceRecord

if TYPE_CHECKING:
    from awsrun.cluster.context import Run, UpRequest



def recorded(cluster: ClusterRecord | None) -> Autostop | None:
    return Autostop.from_config(cluster.config.get(CONFIG_KEY)) if cluster else None


def with_setting(cluster: ClusterRecord, autostop: Autostop | None) -> ClusterRecord:
    config = {k: v for k, v in cluster.config.items() if k != CONFIG_KEY}
    if autostop is not None:
        config[CONFIG_KEY] = autostop.as_config()
    return dataclasses.replace(cluster, config=config)


def for_up(settings: Settings, explicit: frozenset[str], down: bool, before: Autostop | None,
           gpu_idle: float | None = None) -> Autostop | None:
    """The setting an `up` applies: --autostop (with or without --autostop-down) says it all; otherwise what
    the cluster recorded (a later `awsrun autostop` included), with --autostop-down added if given; a new
    cluster takes the default of awsrun.toml / AWSRUN_AUTOSTOP. `off` turns it off. `gpu_idle`
    (--autostop-gpu-idle) is added to whichever applies; it needs a duration."""
    setting = _for_up(settings, explicit, down, before)
    if gpu_idle is None:
        return setting
    return dataclasses.replace(setting or Autostop(None), gpu_idle_percent=gpu_idle)  # no duration: refused


def _for_up(settings: Settings, explicit: frozenset[str], down: bool, before: Autostop | None) -> Autostop | None:
    keep_ssh = before.count_ssh_users if before else False
    keep_gpu = before.gpu_idle_percent if before else None
    if "autostop" in explicit or (before is None and settings.autostop is not None):
        idle = parse_duration(settings.autostop)
        return Autostop(idle, down, keep_ssh, keep_gpu if idle else None)
    if before is None:
        return Autostop(None, True) if down else None  # --autostop-down alone: refused, with the fix
    return dataclasses.replace(before, down=True) if down else before


def behavior(setting: Autostop | None) -> str:
    """The instances' InstanceInitiatedShutdownBehavior under a setting (awsrun launches with stop)."""
    return setting.shutdown_behavior if setting else "stop"


def needs_agent(autostop: Autostop | None, records: list[InstanceRecord]) -> bool:
    """The agent is there for autostop (also to turn it off) and for spot interruption notices."""
    return autostop is not None or any(r.market == "spot" for r in records)


def apply_shutdown_behavior(provider, records: list[InstanceRecord], autostop: Autostop | None,
                            reporter: Reporter) -> list[str]:
    """Set each live instance's shutdown behaviour; for --down, cancel persistent spot requests first."""
    live = [r for r in records if r.state in ("pending", "running", "stopping", "stopped")]
    if autostop is not None and autostop.down:
        requests = sorted({r.extra["spot_request_id"] for r in live if r.extra.get("spot_request_id")})
        if requests:
            provider.cancel_spot_requests(requests)
            reporter.warn(f"cancelled spot request {', '.join(requests)} so that a self-terminated instance is "
                          "not relaunched; a spot interruption now ends the instance instead of stopping it")
    for record in live:
        provider.set_shutdown_behavior(record.id, behavior(autostop))
    return [r.id for r in live]


def install(remote: Remote, autostop: Autostop | None, user: str) -> AgentInstall:
    setting = autostop or Autostop(None)
    return install_agent(remote, idle_seconds=setting.idle_seconds, count_ssh_users=setting.count_ssh_users,
                         user=user, gpu_idle_percent=setting.gpu_idle_percent)


# `awsrun up` ---------------------------------------------------------------------------------------
def refuse_for_machines(run: "Run", request: "UpRequest", provider: str) -> None:
    """--autostop on a local/ssh cluster is refused; a config-file default is ignored with a warning."""
    name = run.settings.cluster
    if "autostop" in request.explicit or request.autostop_down:
        refuse_unless_aws(provider, name)
    if run.settings.autostop is not None:
        run.reporter.warn(f"autostop ({run.settings.autostop}) applies to EC2 clusters only: "
                          f"cluster {name!r} ({provider}) is never shut down by awsrun")


def configure_agents(run: "Run", cluster: ClusterRecord, records: Iterable[InstanceRecord]) -> list[tuple[str, str]]:
    """Install the agent with the cluster's autostop on each running node, after the bootstrap: for
    autostop (also to turn it off), and on spot nodes for interruption notices."""
    setting = recorded(cluster)
    running = [r for r in records if r.state == "running"]
    if not needs_agent(setting, running):
        return []
    done = []
    for record in running:
        with run.reporter.phase(f"configuring the awsrun agent on {record.id}"):
            try:
                installed = install(_remote(run, cluster, record), setting, run.settings.ssh_user)
            except RemoteError:  # the bootstrap may have rebooted it: that first connection is gone
                run.remotes.pop(record.id).close()
                installed = install(_remote(run, cluster, record), setting, run.settings.ssh_user)
        done.append((record.id, installed.detail))
    return done


def _remote(run: "Run", cluster: ClusterRecord, record: InstanceRecord) -> Remote:
    from awsrun.cluster.access import open_remote

    if record.id not in run.remotes:
        run.remotes[record.id] = open_remote(run.home, run.settings, cluster, record,
                                             wait_s=run.settings.ssh_timeout, retry_auth=True)
    return run.remotes[record.id]


# `awsrun autostop` ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AutostopResult:
    cluster: str
    autostop: Autostop
    shutdown_set: tuple[str, ...] = ()                       # instances whose shutdown behaviour was set
    agents: dict[str, AgentInstall] = field(default_factory=dict)  # running instance -> install
    pending: tuple[str, ...] = ()                            # not running: the agent gets it at next start


def set_autostop(home: Home, settings: Settings, autostop: Autostop, reporter: Reporter, aws=None) -> AutostopResult:
    """Change a live cluster's autostop: record it, set the shutdown behaviour, re-install the agent config."""
    from awsrun.cluster import ec2
    from awsrun.cluster.access import open_remote, require_cluster
    from awsrun.cluster.context import default_aws, open_state
    from awsrun.providers.aws_requests import validate_cluster_name

    name = validate_cluster_name(settings.cluster)
    state = open_state(home)
    try:
        cluster = require_cluster(state, name, hint="`awsrun status` lists clusters")
        refuse_unless_aws(cluster.provider, name)
        provider = (aws or default_aws)(cluster.region)
        owner = provider.caller_arn()
        found = ec2.reconcile(state, provider, cluster, owner)
        if not found.live:
            raise NotFoundError(f"cluster {name!r} has no instances", hint=f"`awsrun up --cluster {name}` launches one")
        running = [r for r in found.live if r.state == "running"]
        remotes: dict[str, Remote] = {}
        try:
            # every running node reachable (its key known, SSH answering) before anything changes: a
            # failure here leaves the setting, the shutdown behaviour and the agents as they were
            for record in running:
                with reporter.phase(f"connecting to {record.id}"):
                    remotes[record.id] = open_remote(home, settings, cluster, record, wait_s=30, check=True)
            cluster = with_setting(cluster, autostop)
            state.put_cluster(cluster)
            with reporter.phase("setting the instances' shutdown behaviour to " + autostop.shutdown_behavior):
                changed = apply_shutdown_behavior(provider, found.live, autostop, reporter)
            agents: dict[str, AgentInstall] = {}
            for record in running:
                with reporter.phase(f"configuring the agent on {record.id}"):
                    agents[record.id] = install(remotes[record.id], autostop, settings.ssh_user)
        finally:
            for remote in remotes.values():
                remote.close()
        pending = tuple(r.id for r in found.live if r.state != "running")
        return AutostopResult(name, autostop, tuple(changed), agents, pending)
    finally:
        state.close()


def refuse_unless_aws(provider: str, name: str) -> None:
    if provider != "aws":
        what = "this machine" if provider == "local" else "hosts awsrun did not launch"
        raise ConfigError(f"autostop applies to EC2 clusters; cluster {name!r} is {what} ({provider})",
                          hint="awsrun never shuts down machines it did not launch")


# `awsrun status --agent` ---------------------------------------------------------------------------
def agent_reports(home: Home, settings: Settings, cluster: ClusterRecord,
                  records: list[InstanceRecord]) -> dict[str, dict]:
    """What the agent on each running node says (one SSH connection and one command per node);
    {"error": ...} where it cannot be read, {"installed": False} where there is no agent."""
    from awsrun.cluster.access import open_remote

    reports: dict[str, dict] = {}
    for record in records:
        if record.state != "running":
            continue
        try:
            remote = open_remote(home, settings, cluster, record, wait_s=10)
        except AwsrunError as exc:
            reports[record.id] = {"error": exc.message}
            continue
        try:
            found = agent_status(remote)
        except AwsrunError as exc:
            found = {"error": exc.message}
        finally:
            remote.close()
        reports[record.id] = found if found is not None else {"installed": False}
    return reports
