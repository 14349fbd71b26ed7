"""`up`: a cluster's machines launched, started or found, and bootstrapped (stop, start and down live in
cluster_ops.py, status in cluster_status.py, the key pair and security group `up` sets in cluster_network.py).

Plain functions over AWSRUN_HOME, the settings and a Reporter; they return dataclasses and raise
AwsrunErrors. Providers: `aws` (EC2 instances awsrun launches), `ssh` (hosts the user already has),
`local` (this machine). `up` never launches a second instance for a node that has one: it starts a
stopped one, waits for a pending one, and otherwise just checks that SSH answers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from awsrun import locks
from awsrun.cluster import autostop, keys
from awsrun.cluster import ec2 as aws_cluster
from awsrun.cluster import nodes as cluster_nodes
from awsrun.cluster.access import open_remote, wait_for_ssh
from awsrun.cluster.caller_ip import looks_up_address, resolve_ssh_cidr
from awsrun.cluster.context import (
    AwsFactory,
    Run,
    UpRequest,
    UpResult,
    default_aws,
    open_state,
)
from awsrun.cluster.network import ensure_network, ssh_cidr_for_up, world_open_warnings
from awsrun.errors import AwsrunError, ConfigError, Interrupted, NotImplementedYet
from awsrun.home import Home
from awsrun.progress import Reporter
from awsrun.providers.aws_requests import LaunchSpec, validate_cluster_name
from awsrun.remote.base import Remote
from awsrun.state import ClusterRecord, InstanceRecord


def up(home: Home, request: UpRequest, reporter: Reporter, aws: AwsFactory = default_aws) -> UpResult:
    settings = request.settings
    name = validate_cluster_name(settings.cluster)
    bootstrap = _bootstrap_function() if request.bootstrap else None
    run = Run(home, settings, open_state(home), reporter, aws)
    try:
        existing = run.state.get_cluster(name)
        provider = "local" if request.local else "ssh" if request.hosts else existing.provider if existing else "aws"
        if existing and existing.provider != provider:
            raise ConfigError(f"cluster {name!r} already exists with provider {existing.provider!r}",
                              hint=f"pick another --cluster, or remove it first with `awsrun down --cluster {name}`")
        if provider == "aws":
            from awsrun.cluster.candidates import up_aws_candidates

            # one `up` per cluster from its reconcile until its instances answer SSH: two at once would each
            # see node 0 missing and launch it twice. The bootstrap, after, has its own lock on the node.
            with locks.cluster_lock(home, name, "up", lambda pid: reporter.warn(
                    f"another `awsrun up` of cluster {name!r} is running (pid {pid}): waiting for it")):
                result = up_aws_candidates(run, request, run.state.get_cluster(name), _up_aws)  # as the other left it
        else:
            from awsrun.cluster.machines import up_machines

            autostop.refuse_for_machines(run, request, provider)
            result = up_machines(run, request, existing, provider)
        notes = []
        if existing and provider == "local" and not request.local:
            notes.append(f"cluster {name!r} is this machine (made by `awsrun up --local`), not EC2; "
                         "for an EC2 cluster: `awsrun up --cluster NAME`")
        if provider == "local" and _runs_jobs_already():
            notes.append("jobs run with this Python, which has torch (`awsrun bootstrap` makes a venv instead)")
            bootstrap = None
        logs = tuple(_bootstrap(run, result, bootstrap)) if bootstrap else ()
        agents = tuple(autostop.configure_agents(run, result.cluster, result.instances)) if provider == "aws" else ()
        return dataclasses.replace(result, bootstrap_logs=logs, agents=agents, notes=tuple(notes))
    except KeyboardInterrupt:
        raise _interrupted(name, run) from None
    finally:
        for remote in run.remotes.values():
            remote.close()
        run.state.close()


def refuse_before_a_plan(home: Home, request: UpRequest) -> None:
    """What `up` refuses before any cloud call (the cluster name here, the autostop setting and a given
    --ssh-cidr in _up_aws), for `up --dry-run`: a plan is never shown for flags `up` rejects."""
    settings = request.settings
    validate_cluster_name(settings.cluster)
    state = open_state(home)
    try:
        before = autostop.recorded(state.get_cluster(settings.cluster))
    finally:
        state.close()
    autostop.for_up(settings, request.explicit, request.autostop_down, before, request.autostop_gpu_idle)
    if settings.ssh_cidr is not None:  # given: checked, never looked up
        resolve_ssh_cidr(settings)


def _interrupted(name: str, run: Run) -> Interrupted:
    ids = [r.id for r in run.state.instances(name) if not r.id.startswith(aws_cluster.PLACEHOLDER_PREFIX)]
    pending = [r for r in run.state.instances(name) if r.state == aws_cluster.LAUNCHING]
    what = (f"instance {', '.join(ids)} is recorded" if ids
            else "a launch was in flight and is recorded" if pending else "nothing was launched")
    return Interrupted(
        f"interrupted: {what} (cluster {name!r})",
        hint=f"`awsrun up --cluster {name}` continues with it (it never launches a second one); "
             f"`awsrun down --cluster {name}` removes it",
    )


# aws -------------------------------------------------------------------------------------------------
def _up_aws(run: Run, request: UpRequest, cluster: ClusterRecord | None) -> UpResult:
    settings, state, reporter, name = run.settings, run.state, run.reporter, run.settings.cluster
    before = autostop.recorded(cluster)
    setting = autostop.for_up(settings, request.explicit, request.autostop_down, before, request.autostop_gpu_idle)
    if cluster and settings.region and cluster.region and settings.region != cluster.region:
        raise ConfigError(f"cluster {name!r} lives in {cluster.region}, not {settings.region}",
                          hint="leave out --region, or pick another --cluster")
    recorded_key = (cluster.config.get("ssh_key") if cluster else None) or None
    key = keys.resolve_key(run.home, settings.ssh_key or recorded_key)
    cidr_required = cluster is None or not cluster.config.get("security_group_id")
    cidr = None if looks_up_address(settings) else ssh_cidr_for_up(settings, required=cidr_required)  # local: now
    if settings.max_price is not None and not settings.spot:
        reporter.warn("max_price applies to spot launches only; this one is on-demand")
    provider = run.aws(cluster.region if cluster else settings.region)
    with reporter.phase(f"checking cluster {name!r} in {provider.region}"):
        owner = provider.caller_arn()
        fresh = cluster is None
        cluster = cluster or ClusterRecord(name, "aws", provider.region, {"owner": owner})
        found = aws_cluster.reconcile(state, provider, cluster, owner)
        if fresh and found.described:  # adopted what a lost state had launched
            state.put_cluster(cluster)
    if looks_up_address(settings):
        # on the network: only once region and credentials are known good, or offline its error hides theirs
        cidr = ssh_cidr_for_up(settings, required=cidr_required)
    if cidr and cidr.warning:
        reporter.warn(cidr.warning)
    live = found.live
    if live and recorded_key and key.private_path != Path(recorded_key):
        reporter.warn(f"cluster {name!r} was set up with key {recorded_key}; --ssh-key ignored")
        key = keys.resolve_key(run.home, recorded_key)
    _warn_mismatch(live, request, reporter)
    nodes = request.nodes or max([r.node + 1 for r in live] or [1])
    missing = [n for n in range(nodes) if n not in {r.node for r in live}]
    if request.nodes and len(live) > request.nodes:
        reporter.warn(f"cluster {name!r} has {len(live)} nodes; `up` never removes any")
    anchor = next((r.zone for r in live if r.zone), None)
    offered = _preflight(run, provider, len(missing), settings.zone or anchor) if missing else None
    image = _image(run, provider) if missing else None  # a bad --ami fails before anything is created
    with reporter.phase("preparing key pair and security group"):
        cluster, ssh_sources = ensure_network(state, provider, autostop.with_setting(cluster, setting), owner,
                                              key, cidr)
    for warning in world_open_warnings(cluster, ssh_sources, cidr):
        reporter.warn(warning)
    if live and autostop.behavior(setting) != autostop.behavior(before):
        with reporter.phase(f"setting the shutdown behaviour of {', '.join(r.id for r in live)} "
                            f"to {autostop.behavior(setting)}"):
            autostop.apply_shutdown_behavior(provider, live, setting, reporter)

    stopping = [r.id for r in live if r.state == "stopping"]
    if stopping:
        with reporter.phase(f"waiting for {', '.join(stopping)} to finish stopping"):
            provider.wait(stopping, "stopped")
    started = [r.id for r in live if r.state in ("stopped", "stopping")]
    if started:
        from awsrun.providers.aws_errors import CapacityError

        try:
            with reporter.phase(f"starting {', '.join(started)}"):
                provider.start(started)
        except CapacityError as exc:
            raise CapacityError(exc.message, hint=f"`awsrun start --cluster {name} --move` moves it to a zone with "
                                                  "room, disk and all; or try again later") from None
    launched = _launch_missing(run, provider, cluster, owner, image, missing, live, found.launching, nodes,
                               offered, autostop.behavior(setting), request, fresh=not live) if image else []
    waiting = [r.id for r in live if r.state != "running"] + launched
    if waiting:
        with reporter.phase(f"waiting for {', '.join(waiting)} to run"):
            reporter.checkpoint("wait-running")
            provider.wait(waiting, "running")
    cluster = state.get_cluster(name) or cluster  # with the placement group, when one was made
    ready = aws_cluster.reconcile(state, provider, cluster, owner).live
    for record in ready:
        run.remotes[record.id] = wait_for_ssh(run, cluster, record, provider)
    return UpResult(cluster, tuple(state.instances(name)), tuple(launched), tuple(started),
                    ssh_cidr=cidr.cidr if cidr else None)


def _preflight(run: Run, provider, count: int, zone: str | None) -> tuple[str, ...]:
    """Offering and vCPU quota before anything is created (cached for minutes): a short quota stops here
    with the `awsrun quota request` command instead of a failed launch. Returns the offering zones."""
    from awsrun.account.launch_check import check_launch_quota
    from awsrun.providers.aws_clients import AwsClients

    settings = run.settings
    with run.reporter.phase(f"checking the offering and vCPU quota for {count} {settings.instance_type}"):
        clients = AwsClients(provider.region, ec2=provider.ec2, quotas=provider.client("service-quotas"))
        check = check_launch_quota(settings.instance_type, home=run.home, count=count, spot=settings.spot,
                                   region=provider.region, zone=zone, clients=clients)
    for warning in check.warnings:
        run.reporter.warn(f"{warning}; launching anyway")
    return check.zones


def _warn_mismatch(live: list[InstanceRecord], request: UpRequest, reporter: Reporter) -> None:
    if not live:
        return
    settings, first = request.settings, live[0]
    if "instance_type" in request.explicit and first.instance_type != settings.instance_type:
        reporter.warn(f"the cluster already runs {first.instance_type}; --instance-type {settings.instance_type} "
                      "is ignored (`awsrun down` first to change it)")
    market = "spot" if settings.spot else "on-demand"
    if "spot" in request.explicit and first.market != market:
        reporter.warn(f"the cluster's instance is {first.market}; --{market} is ignored")


def _image(run: Run, provider):
    settings = run.settings
    with run.reporter.phase(f"resolving AMI {settings.ami!r} in {provider.region}"):
        image = provider.resolve_image(settings.ami)
    if image.snapshot_gb and settings.volume_gb < image.snapshot_gb:
        raise ConfigError(f"--volume-gb {settings.volume_gb} is smaller than the image's {image.snapshot_gb} GB",
                          hint=f"use --volume-gb {image.snapshot_gb} or more")
    return image


def _launch_missing(run: Run, provider, cluster: ClusterRecord, owner: str, image, missing: list[int],
                    live: list[InstanceRecord], launching: list[InstanceRecord], nodes: int,
                    offered: tuple[str, ...] | None, shutdown_behavior: str, request: UpRequest,
                    fresh: bool) -> list[str]:
    from awsrun.providers.aws_errors import ErrorContext

    settings, reporter = run.settings, run.reporter
    walk = run.failover
    on_refused = (lambda zone, exc: walk.refused(provider.region, settings.instance_type, zone, exc)) if walk else None
    placement = _placement_group(run, provider, cluster, owner, nodes)
    base = LaunchSpec(
        cluster=cluster.name, owner=owner, node=0, launch_token="", instance_type=settings.instance_type,
        image_id=image.id, root_device_name=image.root_device_name, volume_gb=settings.volume_gb,
        key_name=cluster.config["key_name"], security_group_id=cluster.config["security_group_id"],
        spot=settings.spot, max_price=settings.max_price if settings.spot else None,
        spot_can_stop=image.root_device_type == "ebs", keep_volume=settings.keep_volume,
        placement_group=placement, shutdown_behavior=shutdown_behavior,
    )
    context = ErrorContext(region=provider.region, instance_type=settings.instance_type, spot=settings.spot,
                           ami=image.id, max_price=settings.max_price)
    # One zone for all nodes of a cluster: a placement group needs it and cross-zone traffic costs.
    anchor = next((r.zone for r in live if r.zone), None)
    resumed = {p.node: p.extra.get("launch_token") for p in launching}
    market = "spot" if settings.spot else "on-demand"
    launched = []
    for node in missing:
        zones = [anchor] if anchor else aws_cluster.launch_zones(provider, settings.instance_type, settings.spot,
                                                                 settings.zone, offered)
        try:
            after = f" in {provider.region} (the last try failed: {walk.last.message[:120]})" \
                if walk and walk.last else ""
            with reporter.phase(f"launching node {node}: {settings.instance_type} {market}{after}"):
                record = aws_cluster.launch_node(run.state, provider, reporter, dataclasses.replace(base, node=node),
                                                 zones, context, token=resumed.get(node),
                                                 on_refused=on_refused)
        except AwsrunError as exc:
            if not (launched or live):
                raise  # nothing runs: a plain failure
            partial = cluster_nodes.PartialLaunch(cluster.name, nodes, node, exc, tuple(launched),
                                                  tuple(r.id for r in live))
            if cluster_nodes.decide(partial, request.on_partial, request.choose_partial) == "continue":
                cluster_nodes.go_on(run, partial)
                return launched
            raise cluster_nodes.roll_back(run, provider, partial, owner, fresh) from None
        launched.append(record.id)
        anchor = anchor or record.zone
    return launched


def _placement_group(run: Run, provider, cluster: ClusterRecord, owner: str, nodes: int) -> str | None:
    if nodes < 2:
        return None
    if cluster.config.get("placement_group"):
        return cluster.config["placement_group"]
    try:
        name = provider.create_placement_group(cluster.name, owner)
    except AwsrunError as exc:
        run.reporter.warn(f"no cluster placement group ({exc.message}); launching the {nodes} nodes in one "
                          "zone without one: lower bandwidth between nodes")
        return None
    run.state.put_cluster(dataclasses.replace(cluster, config={**cluster.config, "placement_group": name}))
    return name


# bootstrap ---------------------------------------------------------------------------------------------
def _runs_jobs_already() -> bool:
    """The local provider needs no venv when the Python running awsrun has torch (e.g. `pip install '.[jobs]'`)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _bootstrap_function():
    try:
        from awsrun.setup.bootstrap import bootstrap_node
    except ImportError as exc:
        if exc.name not in ("awsrun.setup.bootstrap", None):
            raise
        raise NotImplementedYet("bootstrap is not available yet; use --no-bootstrap") from None
    return bootstrap_node


def _bootstrap(run: Run, result: UpResult, bootstrap_node) -> list[Path]:
    running = [r for r in result.instances if r.state == "running"]
    if len(running) > 1:
        def connect(record: InstanceRecord) -> Remote:
            return open_remote(run.home, run.settings, result.cluster, record, wait_s=run.settings.ssh_timeout,
                               retry_auth=True)

        return cluster_nodes.bootstrap_parallel(run, result.cluster, running, bootstrap_node, connect)
    logs = []
    for record in result.instances:
        if record.state != "running":
            continue
        log_path = run.home.logs_dir / f"bootstrap-{result.cluster.name}-{record.node}.log"

        def reconnect(record: InstanceRecord = record) -> Remote:
            return open_remote(run.home, run.settings, result.cluster, record, wait_s=run.settings.ssh_timeout,
                               retry_auth=True)

        if record.id not in run.remotes:
            run.remotes[record.id] = reconnect()
        with run.reporter.phase(f"bootstrapping {record.id} (log: {log_path})") as phase:
            # autostop=None: `up` installs the agent itself, after the bootstrap (configure_agents)
            bootstrap_node(run.remotes[record.id], dataclasses.replace(run.settings, autostop=None),
                           instance_type=record.instance_type,
                           log_path=log_path, on_line=phase.update, reconnect=reconnect, trust_ready=True)
        logs.append(log_path)
    return logs
