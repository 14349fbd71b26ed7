"""Reconciling the local state with EC2 (in-process, against the moto endpoint): what a killed CLI left
behind is resolved by the launch-token tag, stale records go, other owners' instances are never adopted."""
from __future__ import annotations

import time

import pytest

from awsrun.cluster import ec2 as aws_cluster
from awsrun.cluster.status import status
from awsrun.home import Home
from awsrun.providers.aws import AwsProvider
from awsrun.providers.aws_requests import tags
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, InstanceRecord, State

TOKEN = "feedfacefeedfacefeedfacefeedface"


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def state(home):
    opened = State.open(home.state_db)
    yield opened
    opened.close()


def launch(ec2, owner: str, cluster: str = "default", **extra: str) -> str:
    reservation = ec2.run_instances(
        ImageId="ami-0ubuntu2204a", MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags(cluster, owner, **extra)}])
    return reservation["Instances"][0]["InstanceId"]


def test_a_launch_whose_answer_was_lost_is_found_by_its_token(aws, ec2, state):
    provider = AwsProvider("us-east-1")
    owner = provider.caller_arn()
    cluster = ClusterRecord("default", "aws", "us-east-1", {"owner": owner})
    state.put_cluster(cluster)
    state.put_instance(InstanceRecord(id=f"launch-{TOKEN}", cluster="default", state="launching", node=3,
                                      extra={"launch_token": TOKEN}))
    instance_id = launch(ec2, owner, launch_token=TOKEN)  # tagged node 0; the placeholder says node 3

    found = aws_cluster.reconcile(state, provider, cluster, owner)
    assert [(r.id, r.node, r.state) for r in found.live] == [(instance_id, 3, "running")]
    assert [r.id for r in state.instances("default")] == [instance_id]
    assert found.launching == []


def test_placeholders_without_an_instance_expire(aws, state):
    provider = AwsProvider("us-east-1")
    owner = provider.caller_arn()
    cluster = ClusterRecord("default", "aws", "us-east-1", {"owner": owner})
    state.put_cluster(cluster)
    state.put_instance(InstanceRecord(id=f"launch-{TOKEN}", cluster="default", state="launching",
                                      extra={"launch_token": TOKEN}))
    assert [p.id for p in aws_cluster.reconcile(state, provider, cluster, owner).launching] == [f"launch-{TOKEN}"]
    later = time.time() + aws_cluster.PLACEHOLDER_TTL_S + 1
    assert aws_cluster.reconcile(state, provider, cluster, owner, now=later).launching == []
    assert state.instances("default") == []


def test_records_of_instances_ec2_no_longer_has_are_dropped(aws, state):
    provider = AwsProvider("us-east-1")
    owner = provider.caller_arn()
    cluster = ClusterRecord("default", "aws", "us-east-1", {"owner": owner})
    state.put_cluster(cluster)
    state.put_instance(InstanceRecord(id="i-0000000000000dead", cluster="default", state="running",
                                      launched_at=time.time() - 2 * aws_cluster.MISSING_GRACE_S))
    assert aws_cluster.reconcile(state, provider, cluster, owner).live == []
    assert state.instances("default") == []


def test_other_owners_instances_are_listed_never_adopted(aws, ec2, home, state):
    provider = AwsProvider("us-east-1")
    owner = provider.caller_arn()
    state.put_cluster(ClusterRecord("default", "aws", "us-east-1", {"owner": owner}))
    theirs = launch(ec2, "arn:aws:iam::123456789012:user/bob")
    mine = launch(ec2, owner, cluster="lost")

    report = status(home, Settings(region="us-east-1"))
    assert sorted((o.id, o.cluster, o.adopted) for o in report.orphans) == sorted(
        [(theirs, "default", False), (mine, "lost", True)])
    clusters = {c.name: [i.id for i in c.instances] for c in report.clusters}
    assert clusters == {"default": [], "lost": [mine]}
    assert theirs not in {i.id for i in state.instances()}
