"""Each `up` makes the security group's SSH rules equal to the current CIDR: a 0.0.0.0/0 given once does
not stay open behind later /32s, and a world-open rule awsrun did not make is named on every `up`.
The real CLI against moto's EC2 endpoint, the instance a loopback sshd host."""
from __future__ import annotations

from tests.test_up_e2e import awsrun_groups, ok


def ssh_cidrs(ec2) -> list[str]:
    (group,) = awsrun_groups(ec2)
    return sorted(r["CidrIp"] for p in group["IpPermissions"] if p.get("FromPort") == 22 for r in p["IpRanges"])


def test_a_later_up_revokes_the_world_open_rule_an_earlier_up_made(cli, ec2, fleet):
    ok(cli("up", "--no-bootstrap", "--ssh-cidr", "0.0.0.0/0"))
    assert ssh_cidrs(ec2) == ["0.0.0.0/0"]

    narrowed = ok(cli("up", "--no-bootstrap", "--ssh-cidr", "203.0.113.7/32"))
    assert ssh_cidrs(ec2) == ["203.0.113.7/32"]
    assert "whole internet" not in narrowed.stderr

    ok(cli("up", "--no-bootstrap", "--ssh-cidr", "198.51.100.9/32"))  # moved: the old address goes too
    assert ssh_cidrs(ec2) == ["198.51.100.9/32"]
    ok(cli("down", "--yes"))


def test_a_world_open_rule_awsrun_did_not_make_is_named_on_every_up(cli, ec2, fleet):
    ok(cli("up", "--no-bootstrap", "--ssh-cidr", "203.0.113.7/32"))
    (group,) = awsrun_groups(ec2)
    ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    for _ in range(2):
        again = ok(cli("up", "--no-bootstrap", "--ssh-cidr", "203.0.113.7/32"))
        warnings = [line for line in again.stderr.splitlines() if "whole internet" in line]
        assert len(warnings) == 1 and group["GroupId"] in warnings[0] and "0.0.0.0/0" in warnings[0], again
    assert ssh_cidrs(ec2) == ["0.0.0.0/0", "203.0.113.7/32"]  # not ours to remove: named instead
    ok(cli("down", "--yes"))
