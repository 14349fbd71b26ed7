"""`awsrun start --move`: a stopped instance whose zone cannot start it (no capacity there now) moves to
another zone with its disk.

1. an image of the stopped instance (CreateImage: a snapshot of its root volume), tagged with the cluster
   and `awsrun:moved-from`; a second try finds it by that tag instead of making another;
2. a new instance from that image in another zone offering the type (or another of `instance_type`'s
   candidates), launched like any node: placeholder and launch token first, node tag kept;
3. it runs and SSH answers (its new host key pinned, checked against its console);
4. only then: the old instance is terminated and the image and its snapshot deleted.

A spot instance stopped by an interruption takes the same path: only EC2 may start it again, and only in
its own zone once capacity returns there.

The cluster keeps its name, its jobs' records and their outputs (on the disk). A kill at any step leaves
what `awsrun status` shows and `awsrun down` removes (down also deletes the cluster's move images), and
`awsrun start --move` again carries on: the image is found by its tag, the launch by its token.
"""
from __future__ import annotations

import dataclasses

from awsrun.cluster import autostop, ec2, failover
from awsrun.errors import AwsrunError, ConfigError
from awsrun.providers.aws_errors import CapacityError, ErrorContext, TypeNotOffered
from awsrun.providers.aws_requests import LaunchSpec
from awsrun.state import ClusterRecord, InstanceRecord


def move_stopped(run, provider, cluster: ClusterRecord, owner: str, record: InstanceRecord,
                 kept: tuple[str, ...] = ()) -> InstanceRecord:
    """Move the stopped `record` to another zone; returns the new instance's record, SSH answering. `kept`:
    its volumes that outlive its termination (`up --keep-volume`); the new disk is kept as they were."""
    from awsrun.cluster.access import wait_for_ssh

    reporter, state = run.reporter, run.state
    image_id = next((i for i, source in provider.move_images(cluster.name, owner).items() if source == record.id),
                    None)
    with reporter.phase(f"snapshotting the disk of {record.id} (an image to launch elsewhere)"):
        image_id = image_id or provider.create_move_image(record.id, cluster.name, owner)
        reporter.checkpoint("move-image")
        provider.wait_image(image_id)
    image = provider.resolve_image(image_id)
    types = _types(run.settings, record)
    launched = None
    tried: list[str] = []
    resumed = {p.node: p.extra.get("launch_token") for p in ec2.reconcile(state, provider, cluster,
                                                                                   owner).launching}
    for instance_type in types:
        zones = [z for z in provider.zones_for(instance_type) if z != record.zone]
        if not zones:
            continue
        spec = LaunchSpec(
            cluster=cluster.name, owner=owner, node=record.node, launch_token="", instance_type=instance_type,
            image_id=image_id, root_device_name=image.root_device_name,
            volume_gb=max(image.snapshot_gb or 0, run.settings.volume_gb), key_name=cluster.config["key_name"],
            security_group_id=cluster.config["security_group_id"], spot=record.market == "spot",
            keep_volume=bool(kept), shutdown_behavior=autostop.behavior(autostop.recorded(cluster)),
        )
        context = ErrorContext(region=provider.region, instance_type=instance_type, spot=spec.spot, ami=image_id)
        try:
            with reporter.phase(f"launching {instance_type} from the image of {record.id} in "
                                f"{', '.join(zones)} (not {record.zone})"):
                launched = ec2.launch_node(state, provider, reporter, spec, zones, context,
                                                   token=resumed.pop(record.node, None))
            break
        except (CapacityError, TypeNotOffered) as exc:
            tried.append(f"{instance_type}: {exc.message}")
    if launched is None:
        raise CapacityError(f"{record.id} could not move: no other zone had room "
                            f"({'; '.join(tried) or 'no other zone offers ' + (record.instance_type or 'its type')})",
                            hint=f"the image {image_id} of its disk is kept for the next `awsrun start --move`; "
                                 "`awsrun down` removes it with the cluster")
    with reporter.phase(f"waiting for {launched.id} to run"):
        provider.wait([launched.id], "running")
    fresh = next(r for r in ec2.reconcile(state, provider, cluster, owner).live if r.id == launched.id)
    run.remotes[fresh.id] = wait_for_ssh(run, cluster, fresh, provider)
    reporter.checkpoint("move-answered")
    with reporter.phase(f"removing {record.id} and the image {image_id}: {fresh.id} answers in {fresh.zone}"):
        if record.extra.get("spot_request_id"):
            provider.cancel_spot_requests([record.extra["spot_request_id"]])
        provider.terminate([record.id])
        state.put_instance(dataclasses.replace(record, state="shutting-down"))
        provider.wait([record.id], "terminated")
        state.delete_instance(record.id)
        provider.delete_image(image_id)
    for disk_id in kept:
        state.remember_kept_disk(disk_id, provider.region, cluster.name)
        reporter.warn(f"the old disk {disk_id} of {record.id} was kept (up --keep-volume) and now bills on its own; "
                      f"{fresh.id} has a copy: `awsrun delete-disk {disk_id} --region {provider.region}` deletes it")
    return fresh


def _types(settings, record: InstanceRecord) -> list[str]:
    """Its own type first, then the other candidates of `instance_type` / `gpu`."""
    try:
        others = failover.candidate_types(settings)
    except AwsrunError:
        others = []
    return [t for t in dict.fromkeys([record.instance_type or "", *others]) if t]


def stopped_by_interruption(instance) -> bool:
    """A stopped spot instance that EC2 stopped (an interruption): EC2 alone may start it, in its zone."""
    return bool(instance is not None and instance.state == "stopped" and instance.market == "spot"
                and (instance.state_reason or "").startswith("Server.SpotInstanceShutdown"))


def refuse_several(found_live: list[InstanceRecord], name: str) -> None:
    if len(found_live) > 1:
        raise ConfigError(f"cluster {name!r} has {len(found_live)} nodes: `start --move` moves one-node clusters",
                          hint=f"`awsrun start --cluster {name}` again later, or `awsrun down` and `awsrun up` "
                               "with --region/--instance-type candidates")
