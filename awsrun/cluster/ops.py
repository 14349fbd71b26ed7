"""Use cases: stop, start, down. Each reconciles the cluster with EC2 first, then acts, writing the
state after every cloud call; a Ctrl-C leaves records that the same command, run again, finishes."""
from __future__ import annotations

import dataclasses
import subprocess

from awsrun.account.prices import PriceBook, SessionCost, session_costs
from awsrun.cluster import autostop
from awsrun.cluster import ec2 as aws_cluster
from awsrun.cluster.disks import disks_or_why_not
from awsrun.cluster.access import (
    close_connections,
    cluster_not_found,
    require_cluster,
    wait_for_ssh,
)
from awsrun.cluster.context import (
    ActionResult,
    AwsFactory,
    DownResult,
    Run,
    default_aws,
    open_state,
)
from awsrun.errors import ConfigError, Interrupted, NotFoundError
from awsrun.home import Home
from awsrun.job import tmux
from awsrun.progress import Reporter
from awsrun.providers.aws_requests import cluster_filters, validate_cluster_name
from awsrun.settings import DEFAULT_CLUSTER, Settings, cluster_flag
from awsrun.state import ClusterRecord, InstanceRecord, State

STATUS_ADOPTS = "`awsrun status` lists clusters, and adopts awsrun instances the state lost"


def recorded(home: Home, name: str) -> tuple[ClusterRecord | None, list[InstanceRecord]]:
    """What the local state holds for a cluster (no cloud call): for confirmations."""
    state = open_state(home)
    try:
        return state.get_cluster(name), state.instances(name)
    finally:
        state.close()


def running_jobs(home: Home, settings: Settings) -> list[str]:
    """The jobs running on a local cluster (this machine): `down` ends them or refuses, never leaves
    them running unseen. Other clusters: none to check here (EC2's end with their instance)."""
    from awsrun.job import jobs

    record = recorded(home, settings.cluster)[0]
    if record is None or record.provider != "local":
        return []
    with jobs.open_host(home, settings) as host:
        return jobs.running_sessions(host)


def stop(home: Home, settings: Settings, reporter: Reporter, aws: AwsFactory = default_aws) -> ActionResult:
    return _act(home, settings, reporter, aws, "stop")


def start(home: Home, settings: Settings, reporter: Reporter, aws: AwsFactory = default_aws,
          move: bool = False) -> ActionResult:
    """`move`: a stopped instance whose zone has no capacity moves to another zone (awsrun.cluster.move)."""
    return _act(home, settings, reporter, aws, "start", move)


def _act(home: Home, settings: Settings, reporter: Reporter, aws: AwsFactory, verb: str,
         move: bool = False) -> ActionResult:
    name = validate_cluster_name(settings.cluster)
    run = Run(home, settings, open_state(home), reporter, aws)
    try:
        cluster = require_cluster(run.state, name, STATUS_ADOPTS)
        if cluster.provider != "aws":
            raise ConfigError(f"cluster {name!r} is made of machines awsrun did not launch ({cluster.provider}): "
                              f"it does not {verb} them", hint=f"`awsrun down --cluster {name}` forgets the cluster")
        provider = aws(cluster.region)
        owner = provider.caller_arn()
        found = aws_cluster.reconcile(run.state, provider, cluster, owner)
        if not found.live and not found.launching:
            raise NotFoundError(f"cluster {name!r} has no instances", hint=f"`awsrun up --cluster {name}` launches one")
        costs: tuple[SessionCost, ...] = ()
        if verb == "stop":
            costs = session_costs(found.live, cluster.region, PriceBook(lambda _: provider))
            close_connections(home, name)  # no kept SSH master outlives the instance's run
            changed = _stop(run, provider, found)
            costs = tuple(c for c in costs if c.instance_id in changed)
            listed, disk_note = disks_or_why_not(provider, name, owner, _kept_ids(found)) if changed else ([], None)
            still_billed = tuple(d for d in listed if d.instance_id in changed)
        else:
            changed, still_billed, disk_note = _start(run, provider, cluster, owner, found, move), (), None
        return ActionResult(cluster, tuple(run.state.instances(name)), tuple(changed), costs, still_billed, disk_note)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted during `awsrun {verb}` (cluster {name!r})",
                          hint=f"`awsrun status` shows where it is; `awsrun {verb} --cluster {name}` finishes") from None
    finally:
        for remote in run.remotes.values():
            remote.close()
        run.state.close()


def _kept_ids(found: aws_cluster.Reconciled) -> set[str]:
    """The volumes of the cluster's instances that outlive their termination (`up --keep-volume`)."""
    return {v for instance in found.described.values() for v in instance.kept_volume_ids}


def _kept_by(found: aws_cluster.Reconciled, instance_id: str) -> tuple[str, ...]:
    described = found.described.get(instance_id)
    return described.kept_volume_ids if described else ()


def _stop(run: Run, provider, found: aws_cluster.Reconciled) -> list[str]:
    targets = [r for r in found.live if r.state in ("pending", "running")]
    ids = [r.id for r in targets]
    if ids:
        with run.reporter.phase(f"stopping {', '.join(ids)}"):
            provider.stop(ids)
            for record in targets:
                run.state.put_instance(dataclasses.replace(record, state="stopping"))
            provider.wait(ids, "stopped")
    waiting = [r.id for r in found.live if r.state == "stopping"]
    if waiting:
        with run.reporter.phase(f"waiting for {', '.join(waiting)} to stop"):
            provider.wait(waiting, "stopped")
    for record in found.live:
        if record.id in ids or record.id in waiting:
            run.state.put_instance(dataclasses.replace(record, state="stopped", public_ip=None))
    return ids


def _start(run: Run, provider, cluster: ClusterRecord, owner: str, found: aws_cluster.Reconciled,
           move: bool = False) -> list[str]:
    from awsrun.cluster import move as moving
    from awsrun.providers.aws_errors import CapacityError

    if move:
        moving.refuse_several(found.live, cluster.name)
    stopping = [r.id for r in found.live if r.state == "stopping"]
    if stopping:
        with run.reporter.phase(f"waiting for {', '.join(stopping)} to finish stopping"):
            provider.wait(stopping, "stopped")
    ids = [r.id for r in found.live if r.state in ("stopped", "stopping")]
    interrupted = [i for i in ids if moving.stopped_by_interruption(found.described.get(i))]
    if interrupted and not move:  # only EC2 restarts these (EC2 user guide, Spot interruption behaviour)
        flag = cluster_flag(cluster.name, DEFAULT_CLUSTER)
        raise CapacityError(f"{', '.join(interrupted)} was stopped by a spot interruption: only EC2 starts it "
                            "again, in its own zone, once capacity returns there",
                            hint=f"`awsrun start{flag} --move` moves it to a zone with room, disk and all; or wait "
                                 "(`awsrun status` shows when it runs)")
    if interrupted:
        (record,) = [r for r in found.live if r.id in interrupted]
        ids = [moving.move_stopped(run, provider, cluster, owner, record, _kept_by(found, record.id)).id]
    elif ids:
        try:
            with run.reporter.phase(f"starting {', '.join(ids)}"):
                provider.start(ids)
        except CapacityError as exc:
            if not move:
                flag = cluster_flag(cluster.name, DEFAULT_CLUSTER)
                raise CapacityError(exc.message, hint=f"`awsrun start{flag} --move` moves it to a zone with room, "
                                                      f"disk and all; or try again later") from None
            (record,) = [r for r in found.live if r.id in ids]
            moved = moving.move_stopped(run, provider, cluster, owner, record, _kept_by(found, record.id))
            ids = [moved.id]
    waiting = ids + [r.id for r in found.live if r.state == "pending"]
    if waiting:
        with run.reporter.phase(f"waiting for {', '.join(waiting)} to run"):
            provider.wait(waiting, "running")
    ready = aws_cluster.reconcile(run.state, provider, cluster, owner).live  # new public IPs
    for record in ready:
        if record.id not in run.remotes:  # a moved instance answered already
            run.remotes[record.id] = wait_for_ssh(run, cluster, record, provider)
    autostop.configure_agents(run, cluster, ready)  # a setting changed while it was stopped
    return ids


def down(home: Home, settings: Settings, reporter: Reporter, aws: AwsFactory = default_aws, *,
         end_jobs: bool = False, delete_disks: bool = False) -> DownResult:
    """Terminate the cluster's instances, delete what awsrun created for it, forget it. A local cluster's
    running jobs are ended first with `end_jobs` (as `awsrun kill` does), else refused. The disks that
    outlive their instances (`up --keep-volume`, or left by an earlier down) go too with `delete_disks`."""
    name = validate_cluster_name(settings.cluster)
    state = open_state(home)
    try:
        cluster = state.get_cluster(name) or _from_cloud(state, settings, name, aws)
        if cluster.provider != "aws":
            ended = _end_local_jobs(home, settings, reporter, end_jobs) if cluster.provider == "local" else ()
            close_connections(home, name)
            if cluster.provider == "local":
                subprocess.run(["sh", "-c", tmux.stop_idle_server(tmux.home_socket(str(home.root)))],
                               capture_output=True)
            state.delete_cluster(name)
            return DownResult(name, cluster.provider, ended_jobs=ended)
        close_connections(home, name)
        provider = aws(cluster.region)
        owner = provider.caller_arn()
        with reporter.phase(f"checking cluster {name!r} in {provider.region}"):
            found = aws_cluster.reconcile(state, provider, cluster, owner)
        costs = session_costs(found.live, cluster.region, PriceBook(lambda _: provider))
        listed, disk_note = disks_or_why_not(provider, name, owner, _kept_ids(found))
        kept = tuple(d for d in listed if d.kept)
        terminated, groups, key_pairs = aws_cluster.teardown(state, provider, reporter, cluster, owner, found)
        deleted: tuple = ()
        if delete_disks and kept:
            with reporter.phase(f"deleting disk {', '.join(d.id for d in kept)}"):
                for disk in kept:
                    provider.delete_volume(disk.id)
                    state.forget_kept_disk(disk.id)
            kept, deleted = (), kept
        for disk in kept:  # `status` looks for them in this region after the cluster is gone
            state.remember_kept_disk(disk.id, provider.region, name)
        state.delete_cluster(name)
        return DownResult(name, "aws", tuple(terminated), tuple(groups), tuple(key_pairs),
                          tuple(c for c in costs if c.instance_id in terminated), kept_disks=kept,
                          deleted_disks=deleted, disk_note=disk_note)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted during `awsrun down`: cluster {name!r} is still recorded",
                          hint=f"`awsrun down --cluster {name}` again finishes the clean-up") from None
    finally:
        state.close()


def _end_local_jobs(home: Home, settings: Settings, reporter: Reporter, end_jobs: bool) -> tuple[str, ...]:
    from awsrun.job import jobs

    names = running_jobs(home, settings)
    if names and not end_jobs:
        raise ConfigError(f"cluster {settings.cluster!r} (this machine) still runs {running_label(names)}: "
                          "forgetting it would leave them running unseen",
                          hint=f"`awsrun down --yes --cluster {settings.cluster}` ends them first; or "
                               f"`awsrun kill {names[0]}`, or wait for them (`awsrun jobs`)")
    if names:
        with reporter.phase(f"ending {running_label(names)}"), jobs.open_host(home, settings) as host:
            for job in names:
                try:
                    jobs.kill(host, job)
                except NotFoundError:
                    pass  # it ended on its own meanwhile
    return tuple(names)


def jobs_label(names: list[str] | tuple[str, ...]) -> str:
    return f"job{'s' if len(names) != 1 else ''} {', '.join(repr(n) for n in names)}"


def running_label(names: list[str] | tuple[str, ...]) -> str:
    return f"running {jobs_label(names)}"


def _from_cloud(state: State, settings: Settings, name: str, aws: AwsFactory) -> ClusterRecord:
    """A cluster the state lost (or never had): what EC2 holds under its tags, owned by this caller."""
    provider = aws(settings.region)
    owner = provider.caller_arn()
    found = [i for i in provider.describe(cluster_filters(name, owner)) if i.state != "terminated"]
    if not (found or provider.tagged_security_groups(name, owner) or provider.tagged_key_pairs(name, owner)):
        raise cluster_not_found(state, name, STATUS_ADOPTS)
    cluster = ClusterRecord(name, "aws", provider.region, {"owner": owner})
    state.put_cluster(cluster)
    return cluster

