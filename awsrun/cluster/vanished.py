"""When a cluster's instance stops answering: ask EC2 what became of it, record it, and say it plainly.

A spot reclaim, a terminate from the console, an autostop or `sudo shutdown` all look the same from the
SSH side (a dropped or refused connection). EC2's StateReason tells them apart (its code starts the
message: "Server.SpotInstanceTermination: ...", see the EC2 API reference, StateReason). Asked only after
an SSH failure, with one attempt and short timeouts, so a healthy command never pays for it.
"""
from __future__ import annotations

from awsrun.errors import AwsrunError, HostKeyError, RemoteError
from awsrun.home import Home
from awsrun.state import State

GONE = ("shutting-down", "terminated")
DOWN = ("stopping", "stopped")
REASONS = {
    "Server.SpotInstanceTermination": "EC2 reclaimed the spot capacity (a spot interruption)",
    "Client.UserInitiatedShutdown": "a user terminated or stopped it (EC2 API or console)",
    "Client.InstanceInitiatedShutdown": "it shut itself down (`shutdown` on the instance, or awsrun's autostop)",
    "Client.UserInitiatedHibernate": "a user hibernated it",
    "Server.ScheduledStop": "EC2 stopped it for scheduled maintenance",
    "Server.InternalError": "an EC2 internal error stopped it",
    "Server.InsufficientInstanceCapacity": "EC2 had no capacity to keep it",
    "Client.VolumeLimitExceeded": "its volumes exceeded a limit",
}


class InstanceGone(RemoteError):
    """The instance is no longer running: what EC2 says happened to it."""


def describe_reason(state_reason: str | None) -> str:
    """EC2's state reason in words: the code before ':' picks them; an unknown one keeps AWS's text."""
    if not state_reason:
        return "EC2 gives no reason"
    code = state_reason.split(":", 1)[0].strip()
    return f"{REASONS[code]} ({code})" if code in REASONS else state_reason


def explain(home: Home, cluster_name: str, error: AwsrunError, aws=None) -> AwsrunError:
    """`error` unless it is an SSH failure on an EC2 cluster whose instance is no longer running; then an
    InstanceGone naming the instance and the reason, with the state updated to what EC2 says."""
    if not isinstance(error, RemoteError) or isinstance(error, (HostKeyError, InstanceGone)):
        return error
    if not home.state_db.exists():
        return error
    try:
        state = State.open(home.state_db)
    except AwsrunError:
        return error
    try:
        cluster = state.get_cluster(cluster_name)
        if cluster is None or cluster.provider != "aws":
            return error
        records = [r for r in state.instances(cluster.name) if r.state in ("running", "pending", "stopping", "stopped")]
        if not records:
            return error
        try:
            if aws is None:
                from awsrun.cluster.context import default_aws as aws
            now = {i.id: i for i in aws(cluster.region).quick().describe_ids([r.id for r in records])}
        except AwsrunError:
            return error  # EC2 cannot say either: the SSH error is all there is
        return _gone(state, cluster.name, records, now) or error
    finally:
        state.close()


def _gone(state: State, cluster: str, records, now) -> InstanceGone | None:
    from awsrun.cluster.ec2 import record_from

    found = None
    for record in records:
        instance = now.get(record.id)
        if instance is not None and instance.state in ("running", "pending"):
            continue
        if instance is None or instance.state in GONE:
            state.delete_instance(record.id)  # as `status` does with terminated instances
            what = "is gone" if instance is None else f"was terminated: {describe_reason(instance.state_reason)}"
            hint = (f"`awsrun submit --recover --cluster {cluster}` launches a new one and resumes the jobs "
                    "submitted with --checkpoint-bucket from S3 (`awsrun pull S --from-s3` fetches their outputs); "
                    f"otherwise `awsrun up --cluster {cluster}`, then `awsrun submit` again (what the job wrote "
                    "there is gone, except what `awsrun pull` brought back)")
        else:
            state.put_instance(record_from(instance, cluster, record))
            what = f"is {instance.state}: {describe_reason(instance.state_reason)}"
            hint = f"`awsrun start --cluster {cluster}` starts it again (its disk is kept)"
        found = found or InstanceGone(f"instance {record.id} of cluster {cluster!r} {what}", hint=hint)
    return found
