"""A cluster's network on EC2, as `up` sets it: the CIDR SSH is admitted from (the caller's address unless
--ssh-cidr says otherwise), the key pair and security group in place with SSH from that CIDR only, and a
warning for every rule that still lets the whole internet reach SSH.
"""
from __future__ import annotations

import dataclasses

from awsrun.cluster import keys
from awsrun.cluster.caller_ip import SshCidr, resolve_ssh_cidr
from awsrun.errors import ConfigError
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, State


def ssh_cidr_for_up(settings: Settings, required: bool) -> SshCidr | None:
    """Needed to create the security group; on a later `up` it only refreshes the rule if it can."""
    if required:
        return resolve_ssh_cidr(settings)
    try:
        return resolve_ssh_cidr(settings)
    except ConfigError:
        return None


def ensure_network(state: State, provider, cluster: ClusterRecord, owner: str, key: keys.SshKey,
                   cidr: SshCidr | None) -> tuple[ClusterRecord, list[str]]:
    """The key pair and security group in place, SSH admitted from `cidr` only (as far as awsrun's own
    rules go). Returns the cluster and the CIDRs the group still admits SSH from."""
    from awsrun.providers.aws_requests import key_pair_name

    key_name = key_pair_name(cluster.name, key.public_key)
    config = {**cluster.config, "owner": owner, "ssh_key": str(key.private_path), "key_name": key_name}
    cluster = dataclasses.replace(cluster, config=config)
    state.put_cluster(cluster)
    provider.ensure_key_pair(key_name, key.public_key, cluster.name, owner)
    vpc = config.get("vpc_id") or provider.default_vpc()
    group_id, _ = provider.ensure_security_group(cluster.name, owner, vpc)
    config.update(vpc_id=vpc, security_group_id=group_id)
    state.put_cluster(dataclasses.replace(cluster, config=config))
    if cidr:
        provider.allow_ssh(group_id, cidr.cidr)
    sources = provider.ssh_sources(group_id)
    if cidr:
        # the rules become exactly this CIDR: awsrun's earlier ones (a 0.0.0.0/0 of last week) go, after
        # the new one is in, so SSH from here never has a gap
        stale = [c for c, ours in sources if ours and c != cidr.cidr]
        provider.revoke_ssh(group_id, stale)
        sources = [(c, ours) for c, ours in sources if c not in stale]
        config["ssh_cidrs"] = [cidr.cidr]
    cluster = dataclasses.replace(cluster, config=config)
    state.put_cluster(cluster)
    return cluster, [c for c, _ in sources]


def world_open_warnings(cluster: ClusterRecord, sources: list[str], cidr: SshCidr | None) -> list[str]:
    """One line per rule still admitting SSH from anywhere that the user did not ask for on this `up`."""
    group_id = cluster.config.get("security_group_id")
    return [f"security group {group_id} still lets the whole internet reach SSH ({source}); "
            f"remove that rule (`aws ec2 revoke-security-group-ingress --group-id {group_id} ...`) unless you mean it"
            for source in sources if source in ("0.0.0.0/0", "::/0") and not (cidr and cidr.cidr == source)]
