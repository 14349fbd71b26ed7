"""`awsrun up --local` and `awsrun up --host USER@ADDR[:PORT]`: clusters of machines awsrun did not launch.

Only records: the cluster (provider "local" or "ssh", with the SSH key for "ssh") and one instance per
machine. Existing hosts are connected to once, which pins their host keys.
"""
from __future__ import annotations

import re

from awsrun.cluster import keys
from awsrun.cluster.access import wait_for_ssh
from awsrun.cluster.context import Run, UpRequest, UpResult
from awsrun.errors import ConfigError, HostKeyError, RemoteError
from awsrun.state import ClusterRecord, InstanceRecord

# Both end up as words of an ssh command line: nothing that could read as an option or a second word.
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}\Z")
_HOST = re.compile(r"^[A-Za-z0-9_.:%][A-Za-z0-9_.:%-]{0,252}\Z")


def parse_host(text: str, default_user: str) -> tuple[str, str, int]:
    """USER@ADDR[:PORT] (IPv6 as [ADDR]:PORT) -> (user, addr, port)."""
    user, at, rest = text.rpartition("@")
    user = user if at else default_user
    host, port = rest, "22"
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else "22"
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    if not _USER.match(user) or not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--host {text!r} must look like USER@ADDRESS[:PORT]")
    return user, host, int(port)


def up_machines(run: Run, request: UpRequest, cluster: ClusterRecord | None, provider: str) -> UpResult:
    settings, state, name = run.settings, run.state, run.settings.cluster
    if provider == "local":
        wanted = [InstanceRecord(id="local", cluster=name, state="running")]
        config: dict = {}
    else:
        key = keys.resolve_key(run.home, settings.ssh_key or (cluster.config.get("ssh_key") if cluster else None))
        config = {"ssh_key": str(key.private_path)}
        hosts = [parse_host(h, settings.ssh_user) for h in request.hosts]
        wanted = [InstanceRecord(id=_host_id(host, port), cluster=name, state="running", node=index,
                                 extra={"host": host, "port": port, "user": user})
                  for index, (user, host, port) in enumerate(hosts)]
    if cluster is not None and wanted and provider == "ssh":
        have = [r.id for r in state.instances(name)]
        if have and have != [w.id for w in wanted]:
            raise ConfigError(f"cluster {name!r} is already the hosts {', '.join(have)}",
                              hint=f"`awsrun down --cluster {name}` first, or pick another --cluster")
    if provider == "ssh" and not request.hosts:
        wanted = state.instances(name)
    for record in wanted:
        other = next((r for r in state.instances() if r.id == record.id and r.cluster != name), None)
        if other is not None:
            raise ConfigError(f"{record.id} already belongs to cluster {other.cluster!r}",
                              hint=f"use --cluster {other.cluster}, or `awsrun down --cluster {other.cluster}` first")
    cluster = ClusterRecord(name, provider, None, {**(cluster.config if cluster else {}), **config})
    state.put_cluster(cluster)
    for record in wanted:
        state.put_instance(record)
    if provider == "ssh":
        for record in wanted:
            try:
                run.remotes[record.id] = wait_for_ssh(run, cluster, record)
            except HostKeyError:
                raise
            except RemoteError as exc:
                raise RemoteError(f"{exc.message} (the host is recorded in cluster {name!r})",
                                  hint=_unreachable_hint(run, cluster, record, exc)) from None
    return UpResult(cluster, tuple(state.instances(name)))


def _unreachable_hint(run: Run, cluster: ClusterRecord, record: InstanceRecord, exc: RemoteError) -> str:
    """The key is only to blame when the host answered and refused the login (awsrun.remote.ssh and
    awsrun.remote.openssh both say `SSH login as ... was refused`); a refused or silent port is the address,
    the port or sshd."""
    name, user = cluster.name, record.extra["user"]
    host, port = record.extra["host"], int(record.extra.get("port", 22))
    if exc.message.startswith("SSH login as "):
        public = keys.resolve_key(run.home, cluster.config["ssh_key"]).public_key
        return (f"the host must accept this key: add `{public}` to ~{user}/.ssh/authorized_keys there, or pass "
                f"--ssh-key; then re-run `awsrun up --cluster {name}`, or `awsrun down --cluster {name}`")
    address = f"[{host}]" if ":" in host else host
    return (f"check that sshd runs on {address} and listens on port {port} (`ssh -p {port} {user}@{host}` tries "
            f"it); if the address or port is wrong, `awsrun down --cluster {name}` forgets the host and "
            f"`awsrun up --cluster {name} --host USER@ADDRESS[:PORT]` records the right one; otherwise "
            f"`awsrun up --cluster {name}` tries again")


def _host_id(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
