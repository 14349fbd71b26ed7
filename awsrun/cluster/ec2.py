"""The EC2 side of a cluster: reconcile the local records with the cloud, create what a launch needs,
launch one node (trying zones once each on capacity errors), and tear everything down.

State is written before and after each cloud call. Before `run_instances` a placeholder record holds
the launch token, which is also the instance's `awsrun:launch-token` tag and EC2's ClientToken: a CLI
killed while the call was in flight leaves a placeholder that the next reconcile turns into the real
instance (found by its tag), and a resumed `up` re-sends the same token, which EC2 answers with the
same instance instead of a second one.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from awsrun.errors import AwsrunError
from awsrun.progress import Reporter
from awsrun.providers import aws_requests as req
from awsrun.providers.aws import AwsProvider
from awsrun.providers.aws_errors import CapacityError, ErrorContext, TypeNotOffered
from awsrun.providers.aws_instances import Ec2Instance
from awsrun.providers.aws_requests import LaunchSpec
from awsrun.state import ClusterRecord, InstanceRecord, State

LAUNCHING = "launching"
PLACEHOLDER_PREFIX = "launch-"
PLACEHOLDER_TTL_S = 900.0  # a launch not visible in EC2 after this long never happened
MISSING_GRACE_S = 300.0    # DescribeInstances may lag a fresh launch; terminated ones vanish after ~1 h
LIVE = ("pending", "running", "stopping", "stopped")


@dataclass
class Reconciled:
    live: list[InstanceRecord] = field(default_factory=list)        # pending/running/stopping/stopped
    launching: list[InstanceRecord] = field(default_factory=list)   # placeholders not (yet) seen in EC2
    adopted: list[str] = field(default_factory=list)                # tagged instances state did not know
    described: dict[str, Ec2Instance] = field(default_factory=dict)


def record_from(instance: Ec2Instance, cluster: str, previous: InstanceRecord | None = None) -> InstanceRecord:
    extra = dict(previous.extra) if previous else {}
    extra.update({
        "key_name": instance.key_name,
        "security_group_ids": list(instance.security_group_ids),
        "spot_request_id": instance.spot_request_id,
        "launch_token": instance.launch_token,
        "owner": instance.owner,
    })
    return InstanceRecord(
        id=instance.id, cluster=cluster, state=instance.state,
        node=previous.node if previous else instance.node,
        instance_type=instance.instance_type, market=instance.market, zone=instance.zone,
        public_ip=instance.public_ip, private_ip=instance.private_ip,
        launched_at=instance.launched_at, extra={k: v for k, v in extra.items() if v is not None},
    )


def reconcile(state: State, provider: AwsProvider, cluster: ClusterRecord, owner: str,
              now: float | None = None) -> Reconciled:
    """Make the records of `cluster` match EC2: the instances it knows by id, plus everything tagged
    with its name and this owner (adopted), plus the instances placeholders were launching."""
    now = time.time() if now is None else now
    known = state.instances(cluster.name)
    placeholders = [r for r in known if r.state == LAUNCHING]
    previous = {r.id: r for r in known if r.state != LAUNCHING}
    found = {i.id: i for i in provider.describe(req.cluster_filters(cluster.name, owner))}
    # by id only those the tags did not find (one DescribeInstances instead of two when all are tagged)
    for instance in provider.describe_ids(sorted(set(previous) - set(found))):
        found.setdefault(instance.id, instance)
    result = Reconciled(described=found)
    by_token = {i.launch_token: i for i in found.values() if i.launch_token}
    for placeholder in placeholders:
        hit = by_token.get(placeholder.extra.get("launch_token"))
        if hit is not None:
            previous.setdefault(hit.id, dataclasses.replace(placeholder, id=hit.id))
            state.put_instance(record_from(hit, cluster.name, previous[hit.id]))
            state.delete_instance(placeholder.id)
        elif now - placeholder.updated_at > PLACEHOLDER_TTL_S:
            state.delete_instance(placeholder.id)
        else:
            result.launching.append(placeholder)
    for instance in found.values():
        if instance.state == "terminated":
            state.delete_instance(instance.id)
            continue
        if instance.id not in previous:
            result.adopted.append(instance.id)
        record = record_from(instance, cluster.name, previous.get(instance.id))
        state.put_instance(record)
        if instance.state in LIVE:
            result.live.append(record)
    for instance_id, record in previous.items():
        if instance_id not in found and now - (record.launched_at or record.updated_at) > MISSING_GRACE_S:
            state.delete_instance(instance_id)
    result.live.sort(key=lambda r: (r.node, r.id))
    return result


def launch_zones(provider: AwsProvider, instance_type: str, spot: bool, zone: str | None,
                 offered: tuple[str, ...] | list[str] | None = None) -> list[str | None]:
    """Where to try, each zone once: the given zone; for spot the zones EC2 scores likeliest to succeed
    (GetSpotPlacementScores, when the identity may read them), the cheapest first among equals; else EC2's choice first (None), then every offering zone.
    `offered`: the zones offering the type, when the caller knows them already (up's pre-check)."""
    if zone:
        return [zone]
    if spot:
        from awsrun.account.prices import cheapest_zones

        zones = cheapest_zones(provider.spot_prices(instance_type), offered)
        scores = provider.spot_placement_scores(instance_type) if zones else {}
        zones.sort(key=lambda z: -scores.get(z, 0))  # stable: the cheapest first among equal scores
        if zones:
            return list(zones)
    return [None, *(offered if offered is not None else provider.zones_for(instance_type))]


def launch_node(state: State, provider: AwsProvider, reporter: Reporter, base: LaunchSpec,
                zones: list[str | None], context: ErrorContext, token: str | None = None,
                on_refused: Callable[[str | None, AwsrunError], None] | None = None) -> InstanceRecord:
    """Launch node `base.node`, recording a placeholder with the launch token before the call.

    `token` resumes an earlier launch whose answer was lost (EC2 returns the same instance for it).
    `on_refused(zone, error)` hears of each zone that had no capacity (up's table of what was tried).
    """
    tried: list[str] = []
    last: AwsrunError | None = None
    for zone in zones:
        launch_token = token or uuid.uuid4().hex
        token = None  # a resumed token fits its first try only: new parameters need a new token
        placeholder = InstanceRecord(
            id=PLACEHOLDER_PREFIX + launch_token, cluster=base.cluster, state=LAUNCHING, node=base.node,
            instance_type=base.instance_type, market="spot" if base.spot else "on-demand", zone=zone,
            extra={"launch_token": launch_token},
        )
        state.put_instance(placeholder)
        try:
            reporter.checkpoint("before-launch")
        except KeyboardInterrupt:
            state.delete_instance(placeholder.id)  # the call was never made
            raise
        spec = dataclasses.replace(base, launch_token=launch_token, zone=zone)
        attempt = dataclasses.replace(context, zone=zone)
        try:
            instance = provider.run_instance(req.run_instances_request(spec), attempt)
        except (CapacityError, TypeNotOffered) as exc:
            state.delete_instance(placeholder.id)  # EC2 refused: nothing was launched
            if isinstance(exc, TypeNotOffered) and zone is None:
                raise  # the region itself lacks the type: no zone will have it
            tried.append(zone or "a zone of EC2's choice")
            last = exc
            if on_refused is not None:
                on_refused(zone, exc)
            continue
        except AwsrunError:
            state.delete_instance(placeholder.id)
            raise
        # From here a kill leaves the placeholder, resolved by its token on the next reconcile.
        record = record_from(instance, base.cluster, dataclasses.replace(placeholder, id=instance.id))
        try:
            reporter.checkpoint("run-instances")
        finally:
            state.put_instance(record)
            state.delete_instance(placeholder.id)
        return record
    assert last is not None
    raise type(last)(f"{last.message}; tried: {', '.join(tried)}", hint=last.hint)


def teardown(state: State, provider: AwsProvider, reporter: Reporter, cluster: ClusterRecord, owner: str,
             reconciled: Reconciled) -> tuple[list[str], list[str], list[str]]:
    """Terminate the cluster's instances, then delete its placement group, security groups and key
    pairs once nothing uses them. Returns (terminated, security groups, key pairs)."""
    doomed = [i for i in reconciled.described.values() if i.state != "terminated"]
    ids = sorted(i.id for i in doomed)
    if ids:
        with reporter.phase(f"terminating {', '.join(ids)}"):
            provider.cancel_spot_requests(sorted({i.spot_request_id for i in doomed if i.spot_request_id}))
            provider.terminate(ids)
            for record in state.instances(cluster.name):
                if record.id in ids:
                    state.put_instance(dataclasses.replace(record, state="shutting-down"))
            provider.wait(ids, "terminated")
            for instance_id in ids:
                state.delete_instance(instance_id)
    config = cluster.config
    for image_id in sorted(provider.move_images(cluster.name, owner)):  # a `start --move` cut short
        provider.delete_image(image_id)
    if config.get("placement_group"):
        provider.delete_placement_group(config["placement_group"])
    groups = sorted({*([config["security_group_id"]] if config.get("security_group_id") else []),
                     *provider.tagged_security_groups(cluster.name, owner)})
    if groups:
        with reporter.phase(f"deleting security group {', '.join(groups)}"):
            for group_id in groups:
                provider.delete_security_group(group_id)
    key_names = sorted({*([config["key_name"]] if config.get("key_name") else []),
                        *provider.tagged_key_pairs(cluster.name, owner)})
    deleted_keys = []
    for name in key_names:
        users = [i for i in provider.describe([{"Name": "key-name", "Values": [name]}]) if i.state != "terminated"]
        if users:
            reporter.warn(f"key pair {name} is still used by {', '.join(i.id for i in users)}: kept")
            continue
        provider.delete_key_pair(name)
        deleted_keys.append(name)
    return ids, groups, deleted_keys
