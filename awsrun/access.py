"""From a cluster's records to a live Remote on one of its machines. Every use case that touches an
instance goes through `open_remote`, so SSH options (key, pinned host keys, ProxyCommand) live here once."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from awsrun.errors import ConfigError, NotFoundError, RemoteError
from awsrun.home import Home
from awsrun.remote.base import Remote
from awsrun.remote.hostkeys import KnownHosts
from awsrun.remote.target import SshTarget
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, InstanceRecord, State

PROVIDERS = ("aws", "ssh", "local")


START_ONE = "start one with `awsrun up` (or `awsrun up --local` to use this machine)"


def cluster_not_found(state: State, name: str, hint: str = START_ONE) -> NotFoundError:
    known = ", ".join(c.name for c in state.clusters()) or "none"
    return NotFoundError(f"no cluster named {name!r} (known: {known})", hint=hint)


def require_cluster(state: State, name: str, hint: str = START_ONE) -> ClusterRecord:
    cluster = state.get_cluster(name)
    if cluster is None:
        raise cluster_not_found(state, name, hint)
    return cluster


def head_node(state: State, cluster: ClusterRecord, node: int = 0) -> InstanceRecord:
    instances = [i for i in state.instances(cluster.name) if i.state not in ("terminated", "shutting-down")]
    for instance in instances:
        if instance.node == node:
            return instance
    raise NotFoundError(f"cluster {cluster.name!r} has no node {node}",
                        hint=f"`awsrun status` shows its machines; `awsrun up --cluster {cluster.name}` starts them")


def load_node(home: Home, cluster_name: str, node: int = 0) -> tuple[ClusterRecord, InstanceRecord]:
    """The cluster's record and its node `node` from the local state (opened and closed here)."""
    state = State.open(home.ensure().state_db)
    try:
        cluster = require_cluster(state, cluster_name)
        return cluster, head_node(state, cluster, node)
    finally:
        state.close()


def ssh_host_for(instance: InstanceRecord, settings: Settings) -> str:
    """What the SSH layer connects to (and what %h is in a ProxyCommand)."""
    choice = settings.ssh_address
    if choice == "instance_id":
        return instance.id
    if choice == "private_ip" and instance.private_ip:
        return instance.private_ip
    address = instance.public_ip or instance.private_ip
    if not address:
        raise RemoteError(f"instance {instance.id} has no IP address (state {instance.state})",
                          hint="`awsrun status` refreshes it; `awsrun start` starts a stopped instance")
    return address


def ssh_target(home: Home, settings: Settings, cluster: ClusterRecord, instance: InstanceRecord) -> SshTarget:
    """The one place that decides where SSH goes and how it is checked: the paramiko layer, the system
    ssh (with or without a kept master) and `awsrun ssh-config` all use what this returns."""
    if cluster.provider == "ssh":
        host, port = instance.extra["host"], int(instance.extra.get("port", 22))
        user = instance.extra.get("user") or settings.ssh_user
        alias = f"{host}:{port}" if port != 22 else host
    else:
        host, port, user, alias = ssh_host_for(instance, settings), 22, settings.ssh_user, instance.id
    key = cluster.config.get("ssh_key") or settings.ssh_key
    if not key:
        raise RemoteError(f"cluster {cluster.name!r} has no SSH key recorded", hint="pass --ssh-key PATH")
    return SshTarget(
        host=host, port=port, user=user, key_path=Path(os.path.abspath(os.path.expanduser(key))),
        known_hosts=home.known_hosts, alias=alias, proxy_command=settings.ssh_proxy_command,
        expected_fingerprints=frozenset(instance.extra.get("host_key_fingerprints", ())),
    )


def persist_seconds(settings: Settings) -> int:
    from awsrun.remote.openssh import parse_persist

    try:
        return parse_persist(settings.ssh_persist)
    except ValueError as exc:
        raise ConfigError(f"ssh_persist: {exc}") from None


def open_remote(
    home: Home,
    settings: Settings,
    cluster: ClusterRecord,
    instance: InstanceRecord,
    *,
    wait_s: float = 20.0,
    retry_auth: bool = False,
    check: bool = False,
) -> Remote:
    """LocalRemote for the local provider. Otherwise the system ssh over a kept master connection
    (awsrun.remote.openssh) once the host key is pinned and ssh_persist is on; paramiko for the first
    contact (it pins the key, checked against the boot console's fingerprints) or with ssh_persist off.

    `retry_auth` marks a machine that may still be booting (up, start, bootstrap), and `check` a command
    whose point is that SSH answers (up on a running machine): then SSH is tried until it answers, for
    up to `wait_s` seconds. Otherwise the system ssh connects on first use."""
    if cluster.provider == "local":
        from awsrun.remote.local import LocalRemote

        return LocalRemote()
    if instance.state not in ("running", "pending"):
        raise RemoteError(f"instance {instance.id} of cluster {cluster.name!r} is {instance.state}",
                          hint=f"start it with `awsrun start --cluster {cluster.name}`")
    target = ssh_target(home, settings, cluster, instance)
    everyday = _openssh(home, settings, cluster, instance, target)
    if everyday is not None:
        return everyday.wait_ready(wait_s, retry_auth=retry_auth) if retry_auth or check else everyday
    from awsrun.remote.ssh import connect

    return connect(target, wait_s=wait_s, retry_auth=retry_auth)


def _openssh(home: Home, settings: Settings, cluster: ClusterRecord, instance: InstanceRecord, target: SshTarget):
    persist = persist_seconds(settings)
    if persist <= 0 or shutil.which("ssh") is None or not KnownHosts(target.known_hosts).lookup(target.alias):
        return None
    from awsrun.remote.openssh import Control, OpenSshRemote, prepare_directory, socket_name

    if not prepare_directory(home.sockets_dir):
        return None
    return OpenSshRemote(target, Control(home.sockets_dir, socket_name(cluster.name, instance.node, target), persist))


def close_connections(home: Home, cluster: str) -> list[str]:
    """End the kept SSH connections to a cluster's nodes (`stop`, `down`): no master outlives them."""
    from awsrun.remote.openssh import close_masters

    return close_masters(home.sockets_dir, cluster)
