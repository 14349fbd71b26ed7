"""What `up` does differently for a cluster of several nodes: a launch that stops part way (roll back or go
on with fewer, never a half-cluster left running unseen) and bootstrapping the nodes in parallel.

`clusters.up` calls these; like it, they never print (a Reporter) and never prompt: "ask" is a callable
the CLI passes in.
"""
from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from awsrun.cluster import ec2
from awsrun.errors import AwsrunError, ConfigError
from awsrun.settings import DEFAULT_CLUSTER, cluster_flag
from awsrun.state import ClusterRecord, InstanceRecord

if TYPE_CHECKING:
    from awsrun.cluster.context import Run

ON_PARTIAL = ("ask", "continue", "rollback")


@dataclass(frozen=True)
class PartialLaunch:
    """Nodes `launched` are up (besides `kept`, those the cluster had before); node `failed` could not launch."""

    cluster: str
    wanted: int
    failed: int
    error: AwsrunError
    launched: tuple[str, ...]
    kept: tuple[str, ...]

    @property
    def running(self) -> int:
        return len(self.launched) + len(self.kept)

    def describe(self) -> str:
        return (f"node {self.failed} of cluster {self.cluster!r} could not launch ({self.error.message}); "
                f"{self.running} of the {self.wanted} nodes are running: {', '.join(self.kept + self.launched)}")


Chooser = Callable[[PartialLaunch], str]  # returns "continue" or "rollback"


def decide(partial: PartialLaunch, on_partial: str, choose: Chooser | None) -> str:
    if on_partial not in ON_PARTIAL:
        raise ConfigError(f"--on-partial {on_partial!r}: one of {', '.join(ON_PARTIAL)}")
    if on_partial == "ask":
        if choose is None:  # nobody to ask: the safe choice
            return "rollback"
        on_partial = choose(partial)
    return on_partial


def roll_back(run: "Run", provider, partial: PartialLaunch, owner: str, fresh: bool) -> AwsrunError:
    """Undo this `up`: a cluster that had no node before goes entirely (instances, placement group, security
    group, key pair, its record); an existing one loses only the nodes this `up` launched. Returns the
    error to raise, which says what was removed."""
    state, reporter, name = run.state, run.reporter, partial.cluster
    cluster = state.get_cluster(name)
    assert cluster is not None
    if fresh:
        found = ec2.reconcile(state, provider, cluster, owner)
        terminated, groups, keys = ec2.teardown(state, provider, reporter, cluster, owner, found)
        state.delete_cluster(name)
        removed = ", ".join(terminated) or "no instance"
        what = f"rolled back: terminated {removed} and removed what awsrun had created for cluster {name!r}"
    else:
        ids = list(partial.launched)
        with reporter.phase(f"rolling back: terminating {', '.join(ids)}"):
            provider.terminate(ids)
            provider.wait(ids, "terminated")
            for instance_id in ids:
                state.delete_instance(instance_id)
        what = f"rolled back: terminated {', '.join(ids)}; the cluster keeps {', '.join(partial.kept)}"
    message = f"{partial.describe()}; {what}"
    hint = partial.error.hint or ""
    hint = (hint + "; " if hint else "") + ("`awsrun up --on-partial continue` keeps the nodes that launch, "
                                            f"`awsrun up --nodes {partial.running}` asks for fewer")
    try:
        return type(partial.error)(message, hint=hint)
    except TypeError:  # an error class with another signature: keep its exit code's family
        return AwsrunError(message, hint=hint)


def go_on(run: "Run", partial: PartialLaunch) -> None:
    flag = cluster_flag(partial.cluster, DEFAULT_CLUSTER)
    run.reporter.warn(f"{partial.describe()}; going on with {partial.running} node(s), which are billed: "
                      f"`awsrun up{flag} --nodes {partial.wanted}` tries the missing ones again, "
                      f"`awsrun down{flag}` removes the cluster")


# bootstrap -----------------------------------------------------------------------------------------------
def bootstrap_parallel(run: "Run", cluster: ClusterRecord, records: list[InstanceRecord],
                       bootstrap_node, connect: Callable[[InstanceRecord], object]) -> list[Path]:
    """Bootstrap every node at once, one thread and one connection each; their progress lines are
    prefixed with the node. All run to the end; then the first failure (by node) is raised, the others
    are warned about."""
    logs = {r.node: run.home.logs_dir / f"bootstrap-{cluster.name}-{r.node}.log" for r in records}
    for record in records:  # connect first, in this thread: a host-key question is never asked twice at once
        if record.id not in run.remotes:
            run.remotes[record.id] = connect(record)
    lock = threading.Lock()
    where = run.home.logs_dir / f"bootstrap-{cluster.name}-N.log"
    with run.reporter.phase(f"bootstrapping {len(records)} nodes in parallel (logs: {where})") as phase:
        def line(node: int) -> Callable[[str], None]:
            def say(text: str) -> None:
                with lock:
                    phase.update(f"node {node}: {text}")
            return say

        def one(record: InstanceRecord):
            # autostop=None: `up` installs the agent itself, after the bootstrap (configure_agents)
            return bootstrap_node(run.remotes[record.id], dataclasses.replace(run.settings, autostop=None),
                                  instance_type=record.instance_type, log_path=logs[record.node],
                                  on_line=line(record.node), reconnect=lambda r=record: connect(r))

        with ThreadPoolExecutor(max_workers=len(records), thread_name_prefix="bootstrap") as pool:
            futures = [(record, pool.submit(one, record)) for record in records]
            failures = [(record, future.exception()) for record, future in futures if future.exception()]
    if failures:
        for record, exc in failures[1:]:
            run.reporter.warn(f"node {record.node} ({record.id}) failed too: {exc}")
        record, exc = failures[0]
        if isinstance(exc, AwsrunError):
            exc.message = f"node {record.node} ({record.id}): {exc.message}"
        raise exc
    return [logs[r.node] for r in records]
