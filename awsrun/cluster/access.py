"""From a cluster's records to a live Remote on one of its machines. Every use case that touches an
instance goes through `open_remote`, so SSH options (key, pinned host keys, ProxyCommand) live here once;
`wait_for_ssh` is the same for a machine still booting."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from awsrun.cluster.boot_keys import HOST_KEY_WAIT_S, await_boot_fingerprints
from awsrun.errors import ConfigError, HostKeyError, NotFoundError, RemoteError
from awsrun.home import Home
from awsrun.remote.base import Remote
from awsrun.remote.hostkeys import KnownHosts
from awsrun.remote.target import SshTarget
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, InstanceRecord, State

if TYPE_CHECKING:
    from awsrun.cluster.context import Run

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
    nodes = sorted({i.node for i in instances})
    if not nodes or node < nodes[-1]:  # a node the cluster had and lost: `up` launches it again
        raise NotFoundError(f"cluster {cluster.name!r} has no node {node}", hint=f"`awsrun status` shows its "
                            f"machines; `awsrun up --cluster {cluster.name}` starts them")
    if nodes == list(range(len(nodes))):
        counts = (f"--node counts from 0 up to {nodes[-1]}" if len(nodes) > 1
                  else "--node counts from 0, and node 0 is its only one")
    else:
        counts = f"--node takes one of {', '.join(map(str, nodes))}"
    count = f"{len(nodes)} node" + ("s" if len(nodes) > 1 else "")
    raise NotFoundError(f"cluster {cluster.name!r} has no node {node}: it has {count}",
                        hint=f"{counts} (`awsrun status` shows its machines)")


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
        raise missing_key(cluster)
    return SshTarget(
        host=host, port=port, user=user, key_path=Path(os.path.abspath(os.path.expanduser(key))),
        known_hosts=home.known_hosts, alias=alias, proxy_command=settings.ssh_proxy_command,
        expected_fingerprints=frozenset(instance.extra.get("host_key_fingerprints", ())),
    )


def missing_key(cluster: ClusterRecord) -> RemoteError:
    """A cluster with no key recorded (adopted by `status` from instances another AWSRUN_HOME launched,
    whose key this machine does not have): the ways to give one that every command reads."""
    pair = cluster.config.get("key_name")
    which = f"the private key of key pair {pair}" if pair else "the private key its instances accept"
    return RemoteError(
        f"cluster {cluster.name!r} has no SSH key recorded",
        hint=f"set AWSRUN_SSH_KEY=PATH ({which}) for each command, or record it once with "
             f"`awsrun up --cluster {cluster.name} --ssh-key PATH --no-bootstrap`")


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
    from awsrun.remote.openssh import (
        Control,
        OpenSshRemote,
        prepare_directory,
        socket_name,
    )

    if not prepare_directory(home.sockets_dir):
        return None
    return OpenSshRemote(target, Control(home.sockets_dir, socket_name(cluster.name, instance.node, target), persist))


def close_connections(home: Home, cluster: str) -> list[str]:
    """End the kept SSH connections to a cluster's nodes (`stop`, `down`): no master outlives them."""
    from awsrun.remote.openssh import close_masters

    return close_masters(home.sockets_dir, cluster)


def wait_for_ssh(run: Run, cluster: ClusterRecord, record: InstanceRecord, provider=None) -> Remote:
    """Connect (retrying while it boots) and pin its host key, checked against the boot console's
    fingerprints when EC2 has them already."""
    settings = run.settings
    started = time.monotonic()
    with run.reporter.phase(f"waiting for SSH on {record.id}"):
        run.reporter.checkpoint("wait-ssh")
        if provider is not None:
            record = await_boot_fingerprints(run.state, run.home.known_hosts, run.reporter, record, provider,
                                             min(HOST_KEY_WAIT_S, settings.ssh_timeout))
        if provider is None:  # a host that is already up: no boot to wait for, no key being installed
            return open_remote(run.home, settings, cluster, record, wait_s=min(settings.ssh_timeout, 30.0), check=True)
        try:
            return open_remote(run.home, settings, cluster, record, wait_s=settings.ssh_timeout, retry_auth=True)
        except HostKeyError:
            raise
        except RemoteError as exc:
            tail = [line for line in provider.console_output(record.id).splitlines() if line.strip()][-1:]
            seen = f"; its console output ends with: {tail[0].strip()[:160]!r}" if tail else ""
            # the time really waited: the console's host key fingerprints are waited for first (up to
            # ssh_timeout or HOST_KEY_WAIT_S), and one connection attempt may outlast what is left of it
            waited = time.monotonic() - started
            raise RemoteError(
                f"instance {record.id} never became SSH-reachable: gave up after {waited:.0f}s "
                f"(ssh_timeout {settings.ssh_timeout:g}s; {exc.message}){seen}",
                hint=f"it is recorded and still running (and billed): read its boot log with `aws ec2 "
                     f"get-console-output --instance-id {record.id} --region {cluster.region} --output text`; "
                     f"`awsrun up --cluster {cluster.name}` tries again, `awsrun down --cluster {cluster.name}` "
                     "removes it",
            ) from None
