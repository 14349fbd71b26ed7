"""Clusters of several nodes: `up --nodes 3` against the moto endpoint (placement group, the nodes' own
security-group rule, status head first, down, a node that cannot launch), and a torchrun job across two
loopback SSH hosts with gloo on CPU through `awsrun submit --nodes 2`."""
from __future__ import annotations

import json

import pytest

from awsrun import clusters
from awsrun.home import Home
from awsrun.progress import Silent
from awsrun.providers.aws import AwsProvider
from awsrun.providers.aws_errors import CapacityError
from awsrun.settings import Settings
from awsrun.state import State
from tests.test_aws_errors import Injector

CIDR = "203.0.113.7/32"


def ok(result):
    assert result.exit_code == 0, result
    assert "Traceback" not in result.stderr, result
    return result


def live(ec2) -> list[dict]:
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def node_of(instance: dict) -> int:
    return int({t["Key"]: t["Value"] for t in instance["Tags"]}["awsrun:node"])


def awsrun_groups(ec2) -> list[dict]:
    return [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("awsrun-")]


def assert_nothing_left(ec2, aws, home) -> None:
    assert live(ec2) == []
    assert awsrun_groups(ec2) == []
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == []
    assert aws.placement_groups() == {}
    state = State.open(home / "state.db")
    try:
        assert state.clusters() == [] and state.instances() == []
    finally:
        state.close()


# --- up --nodes 3 against moto --------------------------------------------------------------------------

def test_up_three_nodes_in_a_placement_group_status_head_first_and_down(cli, ec2, aws, fleet, awsrun_home):
    aws.serve_placement_groups()
    result = ok(cli("up", "--nodes", "3", "--ssh-cidr", CIDR, "--no-bootstrap", "--instance-type", "c5.large"))
    assert "warning" not in result.stderr, result
    nodes = sorted(live(ec2), key=node_of)
    assert [node_of(i) for i in nodes] == [0, 1, 2]
    assert len({i["Placement"]["AvailabilityZone"] for i in nodes}) == 1
    assert len({i["SubnetId"] for i in nodes}) == 1

    # one cluster placement group, tagged, and every launch asked for it
    (name, group), = aws.placement_groups().items()
    assert group["Strategy"] == "cluster"
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["awsrun:cluster"] == "default"
    requests = aws.launch_requests()
    assert [r.get("Placement.GroupName") for r in requests] == [name] * 3

    # one security group for all three, with the rule that lets the nodes reach each other on every port
    groups = {g["GroupId"] for i in nodes for g in i["SecurityGroups"]}
    assert len(groups) == 1
    (sg,) = ec2.describe_security_groups(GroupIds=list(groups))["SecurityGroups"]
    everyone = [p for p in sg["IpPermissions"] if p["IpProtocol"] == "-1"]
    assert [pair["GroupId"] for p in everyone for pair in p["UserIdGroupPairs"]] == [sg["GroupId"]]
    assert [r["CidrIp"] for p in sg["IpPermissions"] for r in p["IpRanges"]] == [CIDR]

    # status: every node, the head first, each with the private address the others reach it on
    report = json.loads(ok(cli("status", "--json")).stdout)
    (cluster,) = report["clusters"]
    rows = cluster["instances"]
    assert [(r["node"], r["id"]) for r in rows] == [(node_of(i), i["InstanceId"]) for i in nodes]
    assert [r["private_ip"] for r in rows] == [i["PrivateIpAddress"] for i in nodes]
    table = ok(cli("status")).stdout.splitlines()
    assert [line.split("\t")[1] for line in table[1:]] == ["0", "1", "2"]

    down = ok(cli("down", "--yes"))
    assert all(i["InstanceId"] in down.stderr for i in nodes)
    assert_nothing_left(ec2, aws, awsrun_home)


def test_endpoint_that_refuses_placement_groups_launches_without_one_and_says_so(aws, ec2, fleet, tmp_path):
    home = Home(tmp_path / "home").ensure()
    refusing = Injector().error("CreatePlacementGroup", "UnauthorizedOperation",
                                "You are not authorized to perform this operation.", status=403)
    reporter = Silent()
    result = clusters.up(home, clusters.UpRequest(_settings(fleet), nodes=3, bootstrap=False), reporter,
                         aws=refusing)
    assert len(result.launched) == 3 and len(live(ec2)) == 3
    (warning,) = reporter.warnings
    assert warning.startswith("no cluster placement group (your AWS identity may not call CreatePlacementGroup")
    assert "launching the 3 nodes in one zone without one" in warning
    assert [r.get("Placement.GroupName") for r in aws.launch_requests()] == [None] * 3
    assert "placement_group" not in result.cluster.config


class _ThirdLaunchFails(Injector):
    """RunInstances answers the first two launches; every later one gets EC2's capacity error."""

    def _handler(self, operation, code, message, status, times, service):
        inner = super()._handler(operation, code, message, status, None, service)

        def handler(request, **kwargs):
            self.sent[operation] = self.sent.get(operation, 0) + 1
            if self.sent[operation] <= 2:
                return None
            self.sent[operation] -= 1  # counted again inside
            return inner(request, **kwargs)

        return handler


def _settings(fleet, **changes) -> Settings:
    return Settings(**{"ssh_cidr": CIDR, "caller_ip_url": "off", "ssh_timeout": 20.0, "instance_type": "c5.large",
                       "ssh_proxy_command": fleet.proxy_command, **changes})


def _no_capacity() -> Injector:
    return _ThirdLaunchFails().error("RunInstances", "InsufficientInstanceCapacity",
                                     "We currently do not have sufficient c5.large capacity in the Availability "
                                     "Zone you requested", status=500)


def test_a_node_that_cannot_launch_rolls_the_cluster_back_by_default(aws, ec2, fleet, tmp_path):
    aws.serve_placement_groups()
    home = Home(tmp_path / "home").ensure()
    injector = _no_capacity()
    with pytest.raises(CapacityError) as raised:
        clusters.up(home, clusters.UpRequest(_settings(fleet), nodes=3, bootstrap=False), Silent(), aws=injector)
    assert injector.sent["RunInstances"] == 3  # the third node in the cluster's zone, once: no other zone
    message = raised.value.message
    assert message.startswith("node 2 of cluster 'default' could not launch (AWS has no on-demand capacity "
                              "for c5.large in "), message
    assert "2 of the 3 nodes are running" in message and "; rolled back: terminated i-" in message
    assert "--on-partial continue" in raised.value.hint and "--nodes 2" in raised.value.hint
    assert_nothing_left(ec2, aws, home.root)


def test_a_node_that_cannot_launch_can_be_left_out_when_asked(aws, ec2, fleet, tmp_path):
    aws.serve_placement_groups()
    home = Home(tmp_path / "home").ensure()
    asked = []

    def choose(partial):
        asked.append((partial.failed, partial.running, partial.wanted))
        return "continue"

    reporter = Silent()
    request = clusters.UpRequest(_settings(fleet), nodes=3, bootstrap=False, on_partial="ask", choose_partial=choose)
    result = clusters.up(home, request, reporter, aws=_no_capacity())
    assert asked == [(2, 2, 3)]
    assert sorted(node_of(i) for i in live(ec2)) == [0, 1]
    assert [r.node for r in result.instances] == [0, 1]
    (warning,) = reporter.warnings
    assert "going on with 2 node(s), which are billed" in warning and "`awsrun up --nodes 3`" in warning
    clusters_ops_down(home)
    assert_nothing_left(ec2, aws, home.root)


def clusters_ops_down(home: Home) -> None:
    from awsrun import cluster_ops

    cluster_ops.down(home, Settings(), Silent(), aws=AwsProvider)
