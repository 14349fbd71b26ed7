"""`up` for an EC2 cluster over its candidates (awsrun.cluster.failover): a cluster with machines stays where they
are; a new or empty one walks the (region, type) candidates until one launches, moving its empty record
(and what awsrun made for it) from region to region on the way."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from awsrun.cluster import ec2, failover
from awsrun.errors import ConfigError
from awsrun.state import ClusterRecord

if TYPE_CHECKING:
    from awsrun.cluster.context import Run, UpRequest, UpResult


def up_aws_candidates(run: "Run", request: "UpRequest", existing: ClusterRecord | None,
                      up_one: Callable[..., "UpResult"]) -> "UpResult":
    """A cluster with machines stays where they are; a new (or empty) one walks the candidates until one
    launches (awsrun.cluster.failover)."""
    settings = run.settings
    first = failover.candidates(settings)[0]
    if existing and run.state.instances(existing.name):
        regions = failover.candidate_regions(settings)
        region = existing.region if existing.region in regions else first.region
        one = dataclasses.replace(settings, instance_type=first.instance_type, region=region)
        run.settings = one
        return up_one(run, dataclasses.replace(request, settings=one), existing)
    walk = failover.Failover(settings, request.nodes or 1, run.reporter)
    run.failover = walk

    def try_one(candidate: failover.Candidate) -> tuple[str, "UpResult"]:
        cluster = run.state.get_cluster(settings.cluster)
        if cluster and candidate.region and cluster.region != candidate.region:
            cluster = _move_empty(run, cluster)
        one = failover.with_candidate(settings, candidate)
        walk.current_region = one.region or (cluster.region if cluster else None) or run.aws(None).region
        run.settings = one
        return walk.current_region, up_one(run, dataclasses.replace(request, settings=one), cluster)

    result = walk.run(try_one, request.retry)
    if result.launched:
        record = next(r for r in result.instances if r.id == result.launched[0])
        walk.attempts.append(failover.Attempt(result.cluster.region or "", record.instance_type or "",
                                              record.market or walk.market, record.zone, "launched"))
    return dataclasses.replace(result, attempts=tuple(walk.attempts))


def _move_empty(run: "Run", cluster: ClusterRecord) -> None:
    """A cluster with nothing launched moves to another region: what awsrun made for it in the old one
    (security group, key pair) goes first, while the record still names that region, so a kill in between
    leaves it where `awsrun down` looks."""
    provider = run.aws(cluster.region)
    owner = cluster.config.get("owner") or provider.caller_arn()
    found = ec2.reconcile(run.state, provider, cluster, owner)
    if found.live or found.launching:
        raise ConfigError(f"cluster {cluster.name!r} lives in {cluster.region}",
                          hint="leave out --region, or pick another --cluster")
    with run.reporter.phase(f"moving the empty cluster {cluster.name!r} out of {cluster.region}"):
        ec2.teardown(run.state, provider, run.reporter, cluster, owner, found)
        run.reporter.checkpoint("moving-region")
        run.state.delete_cluster(cluster.name)
