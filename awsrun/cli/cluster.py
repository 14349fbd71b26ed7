"""Cluster verbs: up, status, stop, start, down. Parse, call one use case, render."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from awsrun import ui
from awsrun.cli.context import AppContext
from awsrun.cli import disks
from awsrun.errors import CloudError, ConfigError
from awsrun.settings import cluster_flag

# Test hook: with AWSRUN_TEST_PAUSE_AT=NAME, `awsrun up` prints "awsrun-test-pause: NAME" and sleeps at
# that point (before-launch, run-instances, wait-running, wait-ssh, moving-region), so a test can kill it
# exactly there; NAME#N pauses at the N-th time that point is reached. Nothing else reads it.
PAUSE_ENV = "AWSRUN_TEST_PAUSE_AT"


class UiReporter:
    """The use cases' progress, shown through awsrun.ui."""

    def __init__(self) -> None:
        self._reached: dict[str, int] = {}

    def phase(self, label: str):
        return ui.phase(label)

    def warn(self, message: str) -> None:
        ui.say(f"warning: {message}")

    def checkpoint(self, name: str) -> None:
        self._reached[name] = self._reached.get(name, 0) + 1
        if os.environ.get(PAUSE_ENV) in (name, f"{name}#{self._reached[name]}"):
            ui.say(f"awsrun-test-pause: {name}")
            time.sleep(3600)


def _given(**flags: Any) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


cluster_option = click.option("--cluster", help="Cluster name (default: setting `cluster`, 'default').")


@click.command("up")
@cluster_option
@click.option("--instance-type", help="EC2 instance type (default g4dn.xlarge), or several to try in order: "
                                      "g5.xlarge,g6.xlarge.")
@click.option("--gpu", metavar="MODEL", help="Any catalog type with this GPU (T4, A10G, L4, A100, ...), cheapest first.")
@click.option("--spot/--on-demand", "spot", default=None, help="Spot capacity, or on-demand (the default).")
@click.option("--max-price", type=float, help="Spot: highest USD/hour to pay.")
@click.option("--region", help="AWS region (default: boto3's chain), or several to try in order: us-east-1,us-west-2.")
@click.option("--zone", help="Availability zone (default: any; the cheapest for spot).")
@click.option("--ami", help="'ubuntu' (22.04), 'dlami' (Deep Learning Base AMI) or an ami-... id.")
@click.option("--volume-gb", type=int, help="Root volume size in GB (gp3, encrypted; default 100).")
@click.option("--keep-volume/--delete-volume", default=None, help="Keep the root volume after `down`.")
@click.option("--ssh-key", type=click.Path(dir_okay=False), help="Your private key instead of awsrun's own.")
@click.option("--ssh-cidr", help="Who may reach SSH (default: your address /32).")
@click.option("--nodes", type=click.IntRange(1, 64), help="Number of instances (one zone, a placement group).")
@click.option("--on-partial", type=click.Choice(["ask", "continue", "rollback"]),
              help="When a node of --nodes N cannot launch: ask (the default on a terminal), continue with "
                   "fewer, or rollback (the default otherwise: terminate what this up launched).")
@click.option("--no-bootstrap", is_flag=True, help="Skip installing the driver, venv and PyTorch.")
@click.option("--local", is_flag=True, help="Use this machine as the cluster.")
@click.option("--host", "hosts", multiple=True, metavar="USER@ADDR[:PORT]", help="Use existing hosts (repeatable).")
@click.option("--autostop", metavar="DURATION",
              help="Stop the instance after this long without running jobs, e.g. 30m, 2h; 'off' turns it off.")
@click.option("--autostop-down", is_flag=True, help="With --autostop: terminate the idle instance instead.")
@click.option("--autostop-gpu-idle", metavar="PERCENT",
              help="With --autostop: a job whose GPUs all stay below PERCENT (e.g. 5%) counts as idle.")
@click.option("--dry-run", is_flag=True, help="Show the candidates in the order `up` tries them (price, quota "
                                                "headroom); launch nothing.")
@click.option("--retry-until-up", is_flag=True, help="When no candidate has capacity, try them all again (with "
                                                       "backoff) until one launches.")
@click.option("--retry-for", metavar="DURATION", help="Like --retry-until-up, but give up after this long, e.g. 2h.")
@click.pass_obj
def up_command(app: AppContext, nodes: int | None, no_bootstrap: bool, local: bool, hosts: tuple[str, ...],
               autostop_down: bool, autostop_gpu_idle: str | None, on_partial: str | None, dry_run: bool,
               retry_until_up: bool, retry_for: str | None, **flags: Any) -> None:
    """Provision (or resume) a cluster and bootstrap it over SSH."""
    from awsrun.cluster import up
    from awsrun.cluster.context import UpRequest
    from awsrun.setup.agent import parse_percent

    if local and hosts:
        raise ConfigError("--local and --host exclude each other")
    if (local or hosts) and nodes:
        raise ConfigError("--nodes applies to EC2 clusters; with --host, each host is a node")
    if "," in (flags.get("region") or ""):
        flags["regions"], flags["region"] = flags["region"], None
    given = _given(**flags)
    settings = app.settings(**given)
    request = UpRequest(settings=settings, nodes=nodes, bootstrap=not no_bootstrap,
                        local=local, hosts=tuple(hosts), explicit=frozenset(given),
                        autostop_down=autostop_down,
                        autostop_gpu_idle=parse_percent(autostop_gpu_idle) if autostop_gpu_idle else None,
                        on_partial=on_partial or ("ask" if sys.stdin.isatty() else "rollback"),
                        choose_partial=_choose_partial,
                        retry=_retry(retry_until_up, retry_for, settings.retry_backoff))
    if dry_run:
        if local or hosts:
            raise ConfigError("--dry-run plans EC2 launches; leave out --local / --host")
        up.refuse_before_a_plan(app.home, request)
        _show_plan(settings, nodes or 1)
        return
    try:
        result = up.up(app.home, request, UiReporter())
    except Exception as exc:
        _show_attempts(getattr(exc, "attempts", ()))
        raise
    _show_attempts(result.attempts)
    for record in result.instances:
        where = record.public_ip or record.extra.get("host") or "this machine"
        words = (record.id, record.instance_type, record.market, record.zone, record.state, "at", where)
        ui.say(f"  node {record.node}: " + " ".join(w for w in words if w))
    for instance_id, detail in result.agents:
        ui.say(f"  agent on {instance_id}: {detail}")
    for note in result.notes:
        ui.say(f"  {note}")
    name = result.cluster.name
    flag = cluster_flag(name, app.settings().cluster)
    if result.cluster.provider == "aws":
        ui.say(f"cluster {name!r} is ready. Next: `awsrun submit SCRIPT{flag}`; "
               f"`awsrun stop{flag}` stops billing for compute, `awsrun down{flag}` removes it all.")
    else:  # machines awsrun did not launch: nothing of them to stop or bill
        kind = {"local": "this machine", "ssh": "your hosts"}.get(result.cluster.provider, result.cluster.provider)
        ui.say(f"cluster {name!r} ({kind}) is ready. Next: `awsrun submit SCRIPT{flag}`; "
               f"`awsrun down{flag}` forgets it when you are done.")


def _retry(until_up: bool, retry_for: str | None, backoff_s: float):
    from awsrun.cluster.failover import Retry
    from awsrun.setup.agent import duration_seconds

    if until_up and retry_for:
        raise ConfigError("--retry-until-up and --retry-for exclude each other",
                          hint="--retry-for DURATION bounds the retrying; --retry-until-up has no bound")
    if retry_for:
        seconds = duration_seconds(retry_for)
        if not seconds:
            raise ConfigError(f"--retry-for {retry_for!r} is not a duration", hint="e.g. --retry-for 2h or 30m")
        return Retry(until=time.monotonic() + seconds, backoff_s=backoff_s)
    return Retry(backoff_s=backoff_s) if until_up else None


def _show_attempts(attempts) -> None:
    """The short table of what `up` tried, when it tried more than the one that launched."""
    if not attempts or (len(attempts) == 1 and attempts[0].outcome == "launched"):
        return
    ui.table(["region", "type", "market", "zone", "outcome", "why"],
             [(a.region, a.instance_type, a.market, a.zone or "-", a.outcome, a.reason[:100]) for a in attempts], title="what up tried, in order")


def _show_plan(settings, count: int) -> None:
    from awsrun.cluster.capacity_plan import plan
    from awsrun.cluster.context import default_aws

    rows = plan(settings, default_aws, count)
    ui.table(["#", "region", "type", "market", "zones, in order", "$/h", "quota", "headroom vCPUs", "needs", "note"],
             [(n, r.region, r.instance_type, r.market, ",".join(z or "EC2's choice" for z in r.zones),
               _rate(r.usd_per_hour), r.quota_code or r.quota_name,
               None if r.headroom_vcpus is None else f"{r.headroom_vcpus:g}", r.needed_vcpus, r.note)
              for n, r in enumerate(rows, 1)], title="up --dry-run: the candidates in order; nothing launched")


def _choose_partial(partial) -> str:
    """`up --nodes N` when a node cannot launch and a terminal can be asked."""
    ui.say(f"warning: {partial.describe()}")
    return click.prompt(f"continue with {partial.running} node(s), or roll back (terminate them)?",
                        type=click.Choice(["continue", "rollback"]), default="rollback", err=True)


@click.command("status")
@cluster_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--agent", is_flag=True, help="Also ask each running node's agent when autostop fires (SSH).")
@click.option("--cached", is_flag=True, help="Only what the local state recorded: no cloud call (instant).")
@click.pass_obj
def status_command(app: AppContext, cluster: str | None, as_json: bool, agent: bool, cached: bool) -> None:
    """Every cluster, its instances, uptime, price and cost so far, autostop; orphaned awsrun instances too."""
    if cached and agent:
        raise ConfigError("--cached makes no remote call; leave out --agent")
    settings = app.settings()
    if cached:
        from awsrun.cluster.status import cached_status as _cached

        report = _cached(app.home, cluster)
    else:
        from awsrun.cluster.status import status

        report = status(app.home, settings, cluster=cluster, agent=agent)
    if as_json:
        ui.emit_json(report.to_json())
        return
    now = time.time()
    rows = [(c.name, i.node, i.id, i.instance_type, i.market, i.state, i.public_ip, i.private_ip, i.zone,
             _duration(i.uptime_s), _rate(i.hourly_usd), _usd(i.cost_usd), _autostop(c.autostop))
            + ((_fires(i.agent, now),) if agent else ()) + (disks.gb(i.disk_gb),)
            for c in report.clusters for i in c.instances]
    if rows:
        ui.table(["cluster", "node", "id", "type", "market", "state", "public ip", "private ip", "zone",
                  "uptime", "$/h", "cost $", "autostop"] + (["autostop fires"] if agent else []) + ["disk"], rows)
    elif not report.clusters:
        ui.say("no clusters. Start one with `awsrun up` (or `awsrun up --local`).")
    configured = settings.cluster
    for c in report.clusters:
        flag = cluster_flag(c.name, configured)
        if not c.instances:
            ui.say(f"note: cluster {c.name!r} has no instances any more (terminated, or never launched): "
                   f"`awsrun up{flag}` launches one, `awsrun down{flag}` deletes what is left of it")
        for i in c.instances:
            if i.state in ("stopped", "stopping") and i.disk_gb:
                disks.say_stopped(i, f"awsrun start{flag}", f"awsrun down{flag}")
    projects = [(c.name, p.remote_dir, p.local or "(not synced from here)") for c in report.clusters for p in c.projects]
    if projects:
        ui.table(["cluster", "remote directory", "local project"], projects, title="projects on the instances")
    if report.left_disks:
        disks.left_behind_table(report.left_disks)
    if report.orphans:
        ui.table(["id", "cluster", "owner", "state", "type", "region", "adopted"],
                 [(o.id, o.cluster, o.owner, o.state, o.instance_type, o.region, "yes" if o.adopted else "no")
                  for o in report.orphans], title="awsrun instances the local state did not know")
        ui.say("adopted instances now belong to their cluster again: `awsrun down --cluster NAME` removes them; "
               "others' are never touched.")
    for note in report.notes:
        ui.say(f"note: {note}")


@click.command("stop")
@cluster_option
@click.pass_obj
def stop_command(app: AppContext, cluster: str | None) -> None:
    """Stop the cluster's instances: the disk is kept, compute billing ends."""
    from awsrun.cluster import ops

    settings = app.settings(**_given(cluster=cluster))
    result = ops.stop(app.home, settings, UiReporter())
    ui.say(f"stopped {', '.join(result.changed)}" if result.changed else "nothing was running")
    _say_costs(result.costs)
    if result.disks:
        flag = cluster_flag(result.cluster.name, app.settings().cluster)
        disks.say_after_stop(result.disks, f"awsrun start{flag}", f"awsrun down{flag}")
    if result.disk_note:
        ui.say(f"note: {result.disk_note}")


@click.command("start")
@cluster_option
@click.option("--move", is_flag=True, help="If its zone has no capacity now, move the instance to another zone "
                                            "(an image of its disk, a new instance, then the old one goes).")
@click.pass_obj
def start_command(app: AppContext, cluster: str | None, move: bool) -> None:
    """Start the cluster's stopped instances again (they get new public IPs)."""
    from awsrun.cluster import ops

    result = ops.start(app.home, app.settings(**_given(cluster=cluster)), UiReporter(), move=move)
    for record in result.instances:
        ui.say(f"{record.id} {record.state} at {record.public_ip or record.private_ip}")


@click.command("down")
@cluster_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--delete-disks", is_flag=True, help="Also delete the cluster's disks that outlive its instances (kept "
                                                   "with `up --keep-volume`); else they bill on until deleted.")
@click.pass_obj
def down_command(app: AppContext, cluster: str | None, yes: bool, delete_disks: bool) -> None:
    """Terminate the cluster and delete what awsrun created for it (security group, key pair)."""
    from awsrun.cluster import ops

    settings = app.settings(**_given(cluster=cluster))
    record, instances = ops.recorded(app.home, settings.cluster)
    running = ops.running_jobs(app.home, settings)
    name = settings.cluster
    if record is None or record.provider == "aws":
        what = f"terminate the instances of cluster {name!r} and delete its security group and key pair" \
            + (" and every disk it kept" if delete_disks else "")
    else:
        where = "this machine is" if record.provider == "local" else "its machines are"
        what = f"forget cluster {name!r} ({where} left alone)"
    if running:
        what += f" and end its {ops.running_label(running)}"
    if not yes:
        ids = ", ".join(i.id for i in instances) or "no instances recorded"
        ui.confirm("awsrun down", what, f"awsrun down --yes --cluster {name}" + (" --delete-disks" if delete_disks else ""),
                   f"{what} ({ids})?")
    result = ops.down(app.home, settings, UiReporter(), end_jobs=True, delete_disks=delete_disks)
    if result.provider != "aws":
        ended = f"; ended {ops.jobs_label(result.ended_jobs)}" if result.ended_jobs else ""
        ui.say(f"cluster {result.cluster!r} is forgotten: awsrun launched nothing for it, so nothing was "
               f"terminated{ended}")
        return
    parts = [f"terminated {', '.join(result.terminated)}" if result.terminated else "",
             f"deleted security group {', '.join(result.security_groups)}" if result.security_groups else "",
             f"deleted key pair {', '.join(result.key_pairs)}" if result.key_pairs else "",
             f"deleted disk {', '.join(d.id for d in result.deleted_disks)}" if result.deleted_disks else ""]
    done = "; ".join(p for p in parts if p) or ("nothing left in the cloud" if not result.kept_disks
                                                else "nothing left in the cloud but the disks it kept")
    ui.say(f"cluster {result.cluster!r} is gone: {done}")
    _say_costs(result.costs)
    disks.say_kept(result.kept_disks)
    if result.disk_note and delete_disks:
        raise CloudError(f"{result.disk_note}: no disk was deleted",
                         hint="`awsrun status` lists the disks left behind once EC2 lets you list them; "
                              "`awsrun delete-disk` deletes them")
    if result.disk_note:
        ui.say(f"note: {result.disk_note}")


def _say_costs(costs) -> None:
    """One line per instance whose session ended: hours x price, and the total."""
    from awsrun.account.prices import total

    for cost in costs:
        price = (f"${_rate(cost.hourly_usd)}/h ({cost.price_source})" if cost.hourly_usd is not None
                 else "an unknown price")
        amount = f"about ${_usd(cost.cost_usd)}" if cost.cost_usd is not None else "unknown"
        ui.say(f"session cost of {cost.instance_id} ({cost.instance_type} {cost.market}): "
               f"{_duration(cost.seconds)} at {price}: {amount}")
    if len(costs) > 1 and total(costs) is not None:
        ui.say(f"session cost in all: about ${_usd(total(costs))}")


def _autostop(setting: dict | None) -> str:
    from awsrun.setup.agent import describe_duration

    if not setting or not setting.get("idle_seconds"):
        return "off"
    return describe_duration(setting["idle_seconds"]) + (" then down" if setting.get("down") else " then stop")


def _fires(agent: dict | None, now: float) -> str:
    """What the agent's status means for autostop, in a few words."""
    if agent is None:
        return ""
    if "error" in agent:
        return f"unknown: {agent['error']}"[:80]
    if agent.get("installed") is False:
        return "no agent"
    if agent.get("fired_at"):
        return "fired"
    if not agent.get("idle_seconds"):
        return "off"
    if agent.get("running_jobs"):
        return f"not while {len(agent['running_jobs'])} job(s) run"
    if agent.get("fires_at"):
        return f"in {_duration(max(0.0, agent['fires_at'] - now))}"
    return "idle timer starts at the next check"


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _rate(value: float | None) -> str | None:
    """USD/hour as prices are quoted: 0.1893, 0.526, 21.96."""
    return None if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def _usd(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}" if value >= 0.1 or value == 0 else f"{value:.4f}"


COMMANDS = [up_command, status_command, stop_command, start_command, down_command]
