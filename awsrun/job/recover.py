"""Jobs that survive the end of their instance: `submit --checkpoint-bucket` mirrors a job's outputs to S3
and remembers how it was submitted; `submit --recover` brings the cluster back (a replacement instance
when EC2 ended the old one) and resubmits every such job that has not finished, its outputs restored
from S3 first, so it resumes from its last checkpoint.

This is the path for instances that cannot stop on a spot interruption (see docs/cost-and-autostop.md);
a persistent spot request that stops needs none of it: the agent restarts the jobs at boot.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from awsrun.cluster.access import require_cluster
from awsrun.errors import CloudError, NotFoundError
from awsrun.home import Home
from awsrun.job import checkpoints, jobs, submission, tmux
from awsrun.settings import Settings
from awsrun.state import State
from awsrun.transfer import scan as sync


@dataclass(frozen=True)
class Recipe:
    """How a mirrored job was submitted: enough to submit it again on a replacement instance."""

    cluster: str
    session: str
    project_dir: str
    script: str
    args: list[str]
    env: dict[str, str]
    base: str                      # the bucket URL given (s3://BUCKET[/PREFIX])
    region: str | None
    every_s: float
    instance_type: str | None
    spot: bool
    submitted_at: float = field(default_factory=time.time)
    expected_owner: str | None = None   # the AWS account that owns the bucket


    @property
    def url(self) -> str:
        """The job's own mirror: BASE/CLUSTER/SESSION."""
        return str(checkpoints.job_url(checkpoints.parse_url(self.base), self.cluster, self.session))


class RecipeBook:
    """One JSON file per job under AWSRUN_HOME/recover/CLUSTER/ (off submit's fast path: SQLite stays lean)."""

    def __init__(self, home: Home):
        self.root = home.root / "recover"

    def save(self, recipe: Recipe) -> None:
        directory = self.root / recipe.cluster
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = directory / f".{recipe.session}.json.tmp"
        temp.write_text(json.dumps(dataclasses.asdict(recipe)))
        os.replace(temp, directory / f"{recipe.session}.json")

    def load(self, cluster: str, since: float = 0.0) -> list[Recipe]:
        """The cluster's recipes written since `since` (a cluster made again under an old name has none)."""
        directory = self.root / cluster
        found = []
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                recipe = Recipe(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue  # a torn or foreign file: never a reason to fail a recovery
            if recipe.submitted_at >= since:
                found.append(recipe)
        return sorted(found, key=lambda r: r.submitted_at)


def ensure_bucket(provider, base: checkpoints.BucketUrl, owner: str) -> list[str]:
    if provider.ensure_bucket(base.bucket, owner):
        return [f"created S3 bucket {base.bucket} in {provider.region} (private; awsrun never deletes it)"]
    return []


def grant_access(provider, instance_id: str, base: checkpoints.BucketUrl, cluster: str, owner: str,
                 session: str) -> list[str]:
    """The instance may use the job's own prefix, BASE/CLUSTER/SESSION: the cluster's instance profile, its
    role created under awsrun's permissions boundary, gets one inline policy per job. Returns what was done."""
    notes = []
    name = checkpoints.profile_name(base, cluster, owner)
    url = checkpoints.job_url(base, cluster, session)
    current = provider.instance_profile_of(instance_id)
    if current is None or current.endswith(f"/{name}"):
        boundary = provider.ensure_boundary(checkpoints.BOUNDARY_NAME, checkpoints.boundary_policy())
        if provider.ensure_instance_profile(name, checkpoints.trust_policy(), checkpoints.session_policy_name(session),
                                            checkpoints.access_policy(url), boundary):
            notes.append(f"created IAM role and instance profile {name} (S3 access to this cluster's jobs' "
                         f"prefixes only, under the boundary {checkpoints.BOUNDARY_NAME})")
    if current is None:
        provider.associate_instance_profile(instance_id, name)
        notes.append(f"attached instance profile {name} to {instance_id}")
    elif not current.endswith(f"/{name}"):
        notes.append(f"warning: {instance_id} already has instance profile {current.rsplit('/', 1)[-1]}; "
                     f"it must allow s3:ListBucket, GetObject, PutObject, DeleteObject on {url}")
    return notes


def _default_aws(region: str | None):
    from awsrun.cluster.context import default_aws

    return default_aws(region)


def mirror_plan(host: jobs.JobHost, url: checkpoints.BucketUrl, region: str | None, *, restore: bool = False,
                every_s: float = checkpoints.PUSH_EVERY_S, owner: str | None = None) -> checkpoints.MirrorPlan:
    """How this host runs the S3 mirror: this Python and the packaged program on the local provider
    (awsrun's own dependencies include boto3); a tools venv and a copy in ~/.awsrun/bin elsewhere."""
    if host.local:
        return checkpoints.MirrorPlan(url, region, sys.executable, str(checkpoints.program_path()), False,
                                      restore, every_s, owner=owner)
    return checkpoints.MirrorPlan(url, region, f"{checkpoints.TOOLS_VENV}/bin/python", checkpoints.SCRIPT, True,
                                  restore, every_s, host.pip_args, owner=owner)


def submit_mirrored(home: Home, settings: Settings, host: jobs.JobHost, request: submission.SubmitRequest,
                    tree: sync.LocalTree, *, restore: bool = False,
                    aws: Callable = _default_aws) -> tuple[submission.SubmitResult, list[str]]:
    """Submit with runs/SESSION mirrored to settings.checkpoint_bucket, and remember how, for --recover."""
    base = checkpoints.parse_url(settings.checkpoint_bucket or "")
    region = host.cluster.region
    provider = aws(region)  # on --local / --host clusters the mirror uses that machine's own credentials
    owner = provider.account_id()
    notes = ensure_bucket(provider, base, owner)
    if host.cluster.provider == "aws":
        notes += grant_access(provider, host.instance.id, base, host.cluster.name,
                              host.cluster.config.get("owner", ""), request.session)
    url = checkpoints.job_url(base, host.cluster.name, request.session)
    plan = mirror_plan(host, url, provider.region, restore=restore, every_s=settings.checkpoint_every, owner=owner)
    result = submission.submit(host, dataclasses.replace(request, mirror=plan), tree)
    RecipeBook(home).save(Recipe(host.cluster.name, request.session, str(request.project_dir), request.script,
                                 list(request.args), dict(request.env), str(base), provider.region, plan.every_s,
                                 host.instance.instance_type, host.instance.market == "spot", expected_owner=owner))
    notes.append(f"mirroring runs/{request.session} to {url} every {plan.every_s:g}s and when the job ends")
    return result, notes


# --- recover ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recovered:
    session: str
    outcome: str                    # resubmitted | running | finished | killed
    detail: str = ""


@dataclass(frozen=True)
class RecoverResult:
    cluster: str
    launched: tuple[str, ...]
    jobs: tuple[Recovered, ...]


def recover(home: Home, settings: Settings, reporter, *, session: str | None = None, bootstrap: bool = True,
            up: Callable | None = None, aws: Callable = _default_aws) -> RecoverResult:
    """Bring the cluster back and resubmit its mirrored jobs that have not finished, restored from S3."""
    from awsrun.cluster import up as clusters
    from awsrun.cluster.context import UpRequest

    name = settings.cluster
    cluster = _cluster(home, name)
    recipes = [r for r in RecipeBook(home).load(name, since=cluster.created_at)
               if session is None or r.session == session]
    if not recipes:
        which = f"job {session!r}" if session else "no job"
        raise NotFoundError(
            f"{which} of cluster {name!r} mirrors its outputs to S3" + (" (or it was never submitted so)" if session else "")
            + ": there is nothing to recover from",
            hint="submit with --checkpoint-bucket s3://BUCKET[/PREFIX] (or set checkpoint_bucket) so a job can be recovered")
    launched: tuple[str, ...] = ()
    if cluster.provider == "aws":
        newest = recipes[-1]
        again = dataclasses.replace(settings, instance_type=newest.instance_type or settings.instance_type,
                                    spot=newest.spot)
        result = (up or clusters.up)(home, UpRequest(settings=again, bootstrap=bootstrap), reporter)
        launched = result.launched
    aws = functools.cache(aws)  # one provider per region for all the jobs
    scans: dict[str, sync.LocalTree] = {}  # one scan per project
    done = []
    with jobs.open_host(home, settings) as host:
        now = {job.name: job for job in jobs.list_jobs(host)}
        for recipe in recipes:
            status = now.get(recipe.session)
            if status is not None and status.state == "running":
                done.append(Recovered(recipe.session, "running", "still running: nothing to do"))
                continue
            if status is not None and status.state == "exited" and status.exit_code == 0:
                done.append(Recovered(recipe.session, "finished", "exited 0: nothing to do"))
                continue
            if status is not None and status.killed_by_user:
                done.append(Recovered(recipe.session, "killed", "stopped with `awsrun kill`: not resumed "
                                      "(submit it again to run it again)"))
                continue
            done.append(_resubmit(home, settings, host, recipe, aws, scans))
    return RecoverResult(name, launched, tuple(done))


def _cluster(home: Home, name: str):
    state = State.open(home.ensure().state_db)
    try:
        return require_cluster(state, name, hint="`awsrun status` lists them")
    finally:
        state.close()


def _require_known(home: Home, name: str) -> None:
    """Only when there is no recipe: a job mirrored to S3 stays pullable after its cluster is gone."""
    state = State.open(home.ensure().state_db)
    try:
        require_cluster(state, name, hint="`awsrun status` lists clusters; --cluster NAME picks the one the "
                                          "job ran on")
    finally:
        state.close()


def _resubmit(home: Home, settings: Settings, host: jobs.JobHost, recipe: Recipe, aws: Callable,
              scans: dict[str, sync.LocalTree]) -> Recovered:
    project = Path(recipe.project_dir)
    if not project.is_dir():
        raise NotFoundError(f"job {recipe.session!r} was submitted from {project}, which no longer exists",
                            hint="restore the project there; recovery syncs the code from it")
    request = submission.SubmitRequest(project, recipe.script, tuple(recipe.args), tmux.validate_session_name(recipe.session),
                                 dict(recipe.env))
    mirrored = dataclasses.replace(settings, checkpoint_bucket=recipe.base, checkpoint_every=recipe.every_s)
    if recipe.project_dir not in scans:
        scans[recipe.project_dir] = sync.scan(project)
    result, notes = submit_mirrored(home, mirrored, host, request, scans[recipe.project_dir], restore=True, aws=aws)
    detail = "; ".join([*notes, f"restored from {recipe.url}, started in {result.remote_dir}"])
    return Recovered(recipe.session, "resubmitted", detail)


# --- pull from the mirror -------------------------------------------------------------------------------

def pull_from_mirror(home: Home, cluster: str, session: str, destination: Path) -> tuple[str, list[str]]:
    """Bring a job's runs/SESSION back from its S3 mirror (the instance may be gone): this machine's
    credentials, the same program the instance uses (only files, only under `destination`).
    Returns the summary and the warnings (objects it refused to write)."""
    recipe = next((r for r in RecipeBook(home).load(cluster) if r.session == session), None)
    if recipe is None:
        _require_known(home, cluster)  # no record of the job, nor of the cluster: say the cluster is unknown
        raise NotFoundError(f"job {session!r} of cluster {cluster!r} was not submitted with --checkpoint-bucket",
                            hint=f"without a mirror, `awsrun pull {session}` reads it from the instance")
    program = checkpoints.program_path()
    access = checkpoints.access_options(recipe.region, recipe.expected_owner)
    result = subprocess.run([sys.executable, str(program), "pull", *access, recipe.url, str(destination)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        problem = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        raise CloudError(f"pulling {recipe.url} failed: {problem.removeprefix('awsrun-checkpoints: error: ')}",
                         hint="check your AWS credentials and access to the bucket (`awsrun doctor`)")
    warnings = [line.removeprefix("awsrun-checkpoints: ") for line in result.stderr.splitlines() if line.strip()]
    return f"{result.stdout.strip()} from {recipe.url} into {destination}", warnings
