"""Pure builders for the requests that put a cluster's instances on the network: its security group (SSH from
one CIDR only, all traffic between its nodes) and the reading of its SSH rules, the key pair SSH logs in
with, and the placement group that keeps its nodes close. Tagged like everything awsrun creates
(providers/aws_requests.py).
"""
from __future__ import annotations

import ipaddress
from typing import Any

from awsrun.errors import ConfigError
from awsrun.providers.aws_requests import (
    placement_group_name,
    security_group_name,
    tags,
)


def security_group_request(cluster: str, owner: str, vpc_id: str) -> dict[str, Any]:
    return {
        "GroupName": security_group_name(cluster, owner),
        "Description": f"awsrun cluster {cluster}: SSH from one address, all traffic between its nodes",
        "VpcId": vpc_id,
        "TagSpecifications": [{
            "ResourceType": "security-group",
            "Tags": tags(cluster, owner, name=security_group_name(cluster, owner)),
        }],
    }


def parse_cidr(text: str) -> str:
    """A CIDR (or a bare address, taken as /32 or /128) in canonical form; host bits must be zero."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        hint = "e.g. --ssh-cidr 203.0.113.7/32 (your own address)"
        try:
            hint = f"did you mean {ipaddress.ip_network(text.strip(), strict=False)}?"
        except ValueError:
            pass
        raise ConfigError(f"--ssh-cidr {text!r} is not a usable CIDR: {exc}", hint=hint) from None
    return str(network)


def ssh_ingress_request(group_id: str, cidr: str) -> dict[str, Any]:
    """SSH (22/tcp) from one CIDR only. TensorBoard/Jupyter go through SSH port forwarding."""
    network = ipaddress.ip_network(cidr)
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
    if network.version == 4:
        rule["IpRanges"] = [{"CidrIp": str(network), "Description": SSH_RULE_DESCRIPTION}]
    else:
        rule["Ipv6Ranges"] = [{"CidrIpv6": str(network), "Description": SSH_RULE_DESCRIPTION}]
    return {"GroupId": group_id, "IpPermissions": [rule]}


SSH_RULE_DESCRIPTION = "awsrun: SSH"


def ssh_sources(group: dict[str, Any]) -> list[tuple[str, bool]]:
    """(CIDR, made by awsrun) for every rule of a described security group that admits port 22/tcp."""
    found = []
    for permission in group.get("IpPermissions", []):
        protocol, low, high = permission.get("IpProtocol"), permission.get("FromPort"), permission.get("ToPort")
        if protocol not in ("tcp", "6", "-1") or (protocol != "-1" and not (low or 0) <= 22 <= (high or 65535)):
            continue
        for entry in permission.get("IpRanges", []):
            found.append((entry["CidrIp"], entry.get("Description") == SSH_RULE_DESCRIPTION))
        for entry in permission.get("Ipv6Ranges", []):
            found.append((entry["CidrIpv6"], entry.get("Description") == SSH_RULE_DESCRIPTION))
    return found


def ssh_revoke_request(group_id: str, cidrs: list[str]) -> dict[str, Any]:
    """Revoke awsrun's SSH rules from these CIDRs (the same shape ssh_ingress_request authorised)."""
    rules = [ssh_ingress_request(group_id, cidr)["IpPermissions"][0] for cidr in cidrs]
    return {"GroupId": group_id, "IpPermissions": rules}


def nodes_ingress_request(group_id: str) -> dict[str, Any]:
    """All traffic between members of the group: the nodes of one cluster (multi-node jobs)."""
    return {
        "GroupId": group_id,
        "IpPermissions": [{
            "IpProtocol": "-1",
            "UserIdGroupPairs": [{"GroupId": group_id, "Description": "awsrun: nodes of this cluster"}],
        }],
    }


def import_key_pair_request(name: str, public_key: str, cluster: str, owner: str) -> dict[str, Any]:
    return {
        "KeyName": name,
        "PublicKeyMaterial": public_key.strip().encode(),
        "TagSpecifications": [{"ResourceType": "key-pair", "Tags": tags(cluster, owner, name=name)}],
    }


def placement_group_request(cluster: str, owner: str) -> dict[str, Any]:
    name = placement_group_name(cluster, owner)
    return {
        "GroupName": name,
        "Strategy": "cluster",
        "TagSpecifications": [{"ResourceType": "placement-group", "Tags": tags(cluster, owner, name=name)}],
    }
