"""Jobs on several nodes: PyTorch's own launcher (torchrun, `python -m torch.distributed.run`) started in the
same-named tmux session on every node, and the views that gather the nodes back into one job.

awsrun adds no runtime of its own: each node runs an ordinary awsrun job (see awsrun.job.tmux) whose command
is torchrun with the node's rank; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK... for the script. The
rendezvous is torchrun's `static` backend: node i gets `--node-rank i` and global ranks i*P..i*P+P-1, so
rank 0, which writes a job's outputs by convention, is always on node 0 (the head), which `logs` and
`pull` read by default. (With the `c10d` backend torchrun ignores --node-rank and orders the nodes by
host name, so rank 0 could be on any node.) The head hosts the rendezvous store on its private address.
"""
from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, replace
from typing import Callable

from awsrun.cluster.access import require_cluster
from awsrun.errors import AwsrunError, ConfigError, NotFoundError, RemoteError
from awsrun.home import Home
from awsrun.job import jobs, submission, tmux
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, InstanceRecord, State
from awsrun.transfer import scan as sync

RDZV_PORTS = (29500, 29900)   # the default port is picked in this range from the session name


# --- pure builders ----------------------------------------------------------------------------------------

def rdzv_port(session: str) -> int:
    """A port for the session's rendezvous: stable for a name, different for most pairs of names, so two
    jobs of one cluster rarely meet on one port (--rdzv-port picks another)."""
    low, high = RDZV_PORTS
    return low + zlib.crc32(session.encode()) % (high - low)


def torchrun_words(*, nnodes: int, nproc_per_node: int, node_rank: int, endpoint: str, rdzv_id: str) -> list[str]:
    """What comes between the interpreter and the script on node `node_rank`."""
    return ["-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc_per_node),
            "--node-rank", str(node_rank), "--rdzv-backend", "static", "--rdzv-endpoint", endpoint,
            "--rdzv-id", rdzv_id]


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def node_env(head: str) -> dict[str, str]:
    """gloo finds its interface from the host name; nodes that meet on loopback must be told (tests, one box)."""
    return {"GLOO_SOCKET_IFNAME": "lo"} if is_loopback(head) else {}


def head_address(cluster: ClusterRecord, head: InstanceRecord) -> str:
    """Where the other nodes reach the head: its private IP on EC2 (the security group lets the nodes in on
    every port), the host's address for existing machines."""
    if cluster.provider == "aws":
        if not head.private_ip:
            raise RemoteError(f"node 0 ({head.id}) has no private address (state {head.state})",
                              hint=f"`awsrun status --cluster {cluster.name}` refreshes it")
        return head.private_ip
    if cluster.provider == "ssh":
        return str(head.extra["host"])
    raise ConfigError(f"cluster {cluster.name!r} is this machine: a job on several nodes needs an EC2 cluster "
                      "(`awsrun up --nodes N`) or existing hosts (`awsrun up --host A --host B`)")


def gpus_per_node(instance_type: str | None) -> int:
    """torchrun's --nproc-per-node: the type's GPUs from the catalog; 1 (one CPU process) otherwise."""
    from awsrun.setup import catalog

    spec = catalog.lookup(instance_type) if instance_type else None
    return spec.gpu_count if spec is not None and spec.gpu_count > 0 else 1


# --- the cluster's nodes ----------------------------------------------------------------------------------

def nodes_of(home: Home, name: str) -> tuple[ClusterRecord, list[InstanceRecord]]:
    """The cluster and its nodes, in node order (the head first)."""
    home.ensure()
    state = State.open(home.state_db)
    try:
        cluster = require_cluster(state, name)
        nodes = [i for i in state.instances(name) if i.state not in ("terminated", "shutting-down")]
    finally:
        state.close()
    return cluster, sorted(nodes, key=lambda r: (r.node, r.id))


def node_count(home: Home, name: str) -> int:
    return len(nodes_of(home, name)[1])


def _open_hosts(home: Home, settings: Settings, nodes: list[int]) -> list[jobs.JobHost]:
    """One connection per node, made one after the other: a first connection pins a host key, and the
    known_hosts file is written by one thread at a time."""
    hosts: list[jobs.JobHost] = []
    try:
        for node in nodes:
            hosts.append(jobs.open_host(home, settings, node=node))
    except BaseException:
        for host in hosts:
            host.close()
        raise
    return hosts


Outcome = tuple[object, BaseException | None]


def _each(hosts: list[jobs.JobHost], work: Callable[[jobs.JobHost], object]) -> list[Outcome]:
    """`work` on every host at once, one thread each; (result, error) per host, in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="node") as pool:
        futures = [pool.submit(work, host) for host in hosts]
    return [(None, f.exception()) if f.exception() else (f.result(), None) for f in futures]


# --- submit -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MultiSubmitRequest:
    submit: submission.SubmitRequest
    nodes: int
    nproc_per_node: int | None = None   # default: GPUs per node from the catalog, 1 on CPU
    port: int | None = None             # default: rdzv_port(session)


@dataclass(frozen=True)
class MultiSubmitResult:
    session: str
    cluster: str
    nodes: int
    nproc_per_node: int
    endpoint: str
    per_node: tuple[submission.SubmitResult, ...]

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node


def submit(home: Home, settings: Settings, request: MultiSubmitRequest, tree: sync.LocalTree | None = None,
           on_node: Callable[[int, submission.SubmitResult], None] | None = None) -> MultiSubmitResult:
    """Sync the project to nodes 0..N-1 and start torchrun there, all at once. When a node cannot start,
    the nodes that did are stopped (they would wait for it at the rendezvous) and the error names it."""
    base = request.submit
    name = tmux.validate_session_name(base.session)
    cluster, records = nodes_of(home, settings.cluster)
    if request.nodes < 1 or request.nodes > len(records):
        raise ConfigError(f"--nodes {request.nodes}: cluster {cluster.name!r} has {len(records)} node(s)",
                          hint=f"`awsrun up --cluster {cluster.name} --nodes {request.nodes}` adds nodes"
                               if cluster.provider == "aws" else None)
    chosen = records[:request.nodes]
    if [r.node for r in chosen] != list(range(request.nodes)):
        raise ConfigError(f"cluster {cluster.name!r} has nodes {', '.join(str(r.node) for r in records)}: "
                          f"a job on {request.nodes} nodes needs nodes 0 to {request.nodes - 1}",
                          hint=f"`awsrun up --cluster {cluster.name}` brings back the missing ones")
    nproc = request.nproc_per_node or gpus_per_node(chosen[0].instance_type)
    head = head_address(cluster, chosen[0])
    where = endpoint(head, request.port or rdzv_port(name))
    tree = tree if tree is not None else sync.scan(base.project_dir)
    env = {**node_env(head), **base.env}
    hosts = _open_hosts(home, settings, [r.node for r in chosen])
    try:
        def start(host: jobs.JobHost) -> submission.SubmitResult:
            words = torchrun_words(nnodes=request.nodes, nproc_per_node=nproc, node_rank=host.instance.node,
                                   endpoint=where, rdzv_id=name)
            result = submission.submit(host, replace(base, env=env, launcher=tuple(words)), tree)
            if on_node is not None:
                on_node(host.instance.node, result)
            return result

        outcomes = _each(hosts, start)
        failed = [(host, error) for host, (_, error) in zip(hosts, outcomes) if error is not None]
        if failed:
            started = [host for host, (_, error) in zip(hosts, outcomes) if error is None]
            for host in started:
                try:
                    jobs.kill(host, name, force=True)
                except AwsrunError:
                    pass
            raise _node_error(failed, started, name)
        results = tuple(result for result, _ in outcomes)
    finally:
        for host in hosts:
            host.close()
    return MultiSubmitResult(name, cluster.name, request.nodes, nproc, where, results)  # type: ignore[arg-type]


def _node_error(failed: list[tuple[jobs.JobHost, BaseException]], started: list[jobs.JobHost],
                name: str) -> BaseException:
    host, error = failed[0]
    if not isinstance(error, AwsrunError):
        return error
    stopped = f"; stopped it again on node(s) {', '.join(str(h.instance.node) for h in started)}" if started else ""
    error.message = f"node {host.instance.node} ({host.remote.name}): {error.message}{stopped}"
    return error


# --- jobs, logs, kill ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterJob:
    """One session name across the nodes that have it: failed if any node failed, running while any runs."""

    name: str
    state: str                                   # running | exited | failed | killed
    exit_code: int | None
    nodes: tuple[tuple[int, jobs.JobStatus], ...]

    @property
    def label(self) -> str:
        if self.state == "exited":
            return f"exited {self.exit_code}"
        if self.state == "failed":
            first = next(f"node {n}: {s.label}" for n, s in self.nodes if _failed(s))
            return f"failed ({first})"
        return self.state

    @property
    def started_at(self) -> float | None:
        return min((s.started_at for _, s in self.nodes if s.started_at is not None), default=None)

    @property
    def duration(self) -> float | None:
        return max((s.duration for _, s in self.nodes if s.duration is not None), default=None)

    @property
    def command(self) -> list[str]:
        return self.nodes[0][1].command

    def as_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "label": self.label, "exit_code": self.exit_code,
                "started_at": self.started_at, "duration": self.duration, "command": self.command,
                "nodes": [{"node": n, **s.as_dict()} for n, s in self.nodes]}


def _failed(status: jobs.JobStatus) -> bool:
    return status.state == "killed" or (status.state == "exited" and status.exit_code != 0)


def aggregate(name: str, per_node: list[tuple[int, jobs.JobStatus]]) -> ClusterJob:
    states = [s for _, s in per_node]
    if all(s.state == "killed" for s in states):
        state, code = "killed", None
    elif any(_failed(s) for s in states):
        state = "failed"
        code = next((s.exit_code for s in states if s.state == "exited" and s.exit_code), None)
    elif any(s.state == "running" for s in states):
        state, code = "running", None
    else:
        state, code = "exited", 0
    return ClusterJob(name, state, code, tuple(per_node))


def list_jobs(home: Home, settings: Settings) -> list[ClusterJob]:
    """Every job on every node (one round trip per node, all at once), gathered by session name."""
    _, records = nodes_of(home, settings.cluster)
    hosts = _open_hosts(home, settings, [r.node for r in records])
    try:
        outcomes = _each(hosts, jobs.list_jobs)
    finally:
        for host in hosts:
            host.close()
    by_name: dict[str, list[tuple[int, jobs.JobStatus]]] = {}
    for host, (listing, error) in zip(hosts, outcomes):
        if error is not None:
            raise error
        for status in listing:  # type: ignore[union-attr]
            by_name.setdefault(status.name, []).append((host.instance.node, status))
    return [aggregate(name, per_node) for name, per_node in sorted(by_name.items())]


def kill(home: Home, settings: Settings, session: str, *, force: bool = False) -> list[int]:
    """Stop SESSION on every node where it runs; the nodes it was stopped on."""
    name = tmux.validate_session_name(session)
    _, records = nodes_of(home, settings.cluster)
    hosts = _open_hosts(home, settings, [r.node for r in records])
    try:
        outcomes = _each(hosts, lambda host: jobs.kill(host, name, force=force))
    finally:
        for host in hosts:
            host.close()
    stopped = [host.instance.node for host, (_, error) in zip(hosts, outcomes) if error is None]
    errors = [error for _, error in outcomes if error is not None and not isinstance(error, NotFoundError)]
    if errors:
        raise errors[0]
    if not stopped:
        raise NotFoundError(f"no running job named {name!r} on cluster {settings.cluster!r}",
                            hint="`awsrun jobs` lists them")
    return stopped
