"""A job's outputs mirrored to S3 as it runs, so an instance that ends (a spot reclaim that cannot stop,
a terminate) loses none of its checkpoints: pure builders for the URL, the IAM policy, and the shell
steps submit adds to the job's launch.

On the instance `infra/awsrun-checkpoints.py` (boto3, in a small venv of its own) does the copying:
`follow` runs beside the job (started by the job's wrapper, see awsrun.job.tmux) and pushes its output
directory every few seconds and once more when the job ends; `pull` restores it on a replacement.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from awsrun.errors import ConfigError
from awsrun.job.tmux import remote_path

SCRIPT_NAME = "awsrun-checkpoints.py"
LIBRARY_NAME = "awsrun_mirror.py"  # what the program imports, from its own directory
TOOLS_VENV = "~/.awsrun/tools"          # python3 -m venv + boto3: the job's own venv stays the user's
SCRIPT = f"~/.awsrun/bin/{SCRIPT_NAME}"
PUSH_EVERY_S = 60
EXIT_TOOLS_FAILED = 19
EXIT_RESTORE_FAILED = 20
PROFILE_PREFIX = "awsrun-checkpoints-"
BOUNDARY_NAME = "awsrun-checkpoints-boundary"   # infra/iam-policy.json names it: keep the two in step
BOUNDARY_FILE = "iam-boundary-policy.json"

# S3 bucket naming rules (general purpose buckets): 3-63 lowercase letters, digits, dots, hyphens,
# starting and ending with a letter or digit, not shaped like an IP address.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_IP_SHAPED = re.compile(r"^\d+\.\d+\.\d+\.\d+\Z")
# No '*' or '?': a prefix becomes an IAM resource ARN and an s3:prefix StringLike value, where they are
# wildcards (s3://b/exp* would grant exp-other/ as well).
_PREFIX_PART = re.compile(r"^[A-Za-z0-9!_.'()=+,@-]+\Z")


@dataclass(frozen=True)
class BucketUrl:
    bucket: str
    prefix: str = ""    # no leading or trailing '/'

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def child(self, *parts: str) -> "BucketUrl":
        return BucketUrl(self.bucket, "/".join(p for p in (self.prefix, *parts) if p))


def parse_url(url: str) -> BucketUrl:
    """`s3://bucket[/prefix]`, checked: a bad bucket name is the user's typo, said before any AWS call."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise ConfigError(f"checkpoint bucket {url!r} must look like s3://BUCKET or s3://BUCKET/PREFIX")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket or _IP_SHAPED.match(bucket):
        raise ConfigError(f"{bucket!r} is not a valid S3 bucket name",
                          hint="3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit")
    parts = [p for p in prefix.split("/") if p]
    for part in parts:
        if part in (".", "..") or not _PREFIX_PART.match(part):
            raise ConfigError(f"checkpoint prefix {prefix!r}: {part!r} cannot be used in a key",
                              hint="use letters, digits and - _ . ! ' ( ) = + , @ between the slashes")
    return BucketUrl(bucket, "/".join(parts))


def job_url(base: BucketUrl, cluster: str, session: str) -> BucketUrl:
    """Where one job's output directory is mirrored: BASE/CLUSTER/SESSION."""
    return base.child(cluster, session)


# --- IAM: what the instance may do, and only that --------------------------------------------------

def profile_name(bucket: BucketUrl, cluster: str, owner: str) -> str:
    """One role + instance profile per base URL and cluster (and owner: two people's `default` clusters
    differ): an instance has one profile, so the jobs of one cluster share it, and no other cluster does.
    IAM names: at most 64 characters."""
    digest = hashlib.sha256("\0".join((str(bucket), cluster, owner)).encode()).hexdigest()[:10]
    return f"{PROFILE_PREFIX}{bucket.bucket[:64 - len(PROFILE_PREFIX) - 11]}-{digest}"


def session_policy_name(session: str) -> str:
    """The role's inline policy for one job: each job's policy names only its own prefix."""
    return f"awsrun-mirror-{session}"


def boundary_policy() -> str:
    """The permissions boundary every checkpoint role is created under (infra/iam-boundary-policy.json)."""
    return (Path(__file__).resolve().parents[1] / "data" / BOUNDARY_FILE).read_text()


def trust_policy() -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def access_policy(bucket: BucketUrl) -> str:
    """List, read, write and delete under the prefix of that one bucket (a job's own: BASE/CLUSTER/SESSION)."""
    keys = f"{bucket.prefix}/*" if bucket.prefix else "*"
    listing: dict = {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                     "Resource": f"arn:aws:s3:::{bucket.bucket}"}
    if bucket.prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [bucket.prefix, f"{bucket.prefix}/*"]}}
    return json.dumps({"Version": "2012-10-17", "Statement": [
        listing,
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": f"arn:aws:s3:::{bucket.bucket}/{keys}"},
    ]})


# --- shell steps on the instance --------------------------------------------------------------------

@dataclass(frozen=True)
class MirrorPlan:
    """What submit adds for one job: where to mirror, with which interpreter, and whether to restore first."""

    url: BucketUrl
    region: str | None
    python: str                 # runs the mirror program: the tools venv's python, or this one (local)
    script: str                 # the mirror program on the target
    install_tools: bool         # make TOOLS_VENV (with boto3) when it is missing
    restore: bool = False       # pull the mirror into the output directory before the job starts
    every_s: float = PUSH_EVERY_S
    pip_args: str = ""
    owner: str | None = None    # the account that must own the bucket (S3's ExpectedBucketOwner)


def _region(plan: MirrorPlan) -> list[str]:
    """The program's options saying where the bucket is and whose it must be."""
    return access_options(plan.region, plan.owner)


def access_options(region: str | None, owner: str | None) -> list[str]:
    return [*(["--region", region] if region else []), *(["--expected-owner", owner] if owner else [])]


def tools_step(pip_args: str = "") -> str:
    """Make the tools venv with boto3 unless it imports already; exit EXIT_TOOLS_FAILED when pip fails."""
    python = remote_path(f"{TOOLS_VENV}/bin/python")
    pip = ["-m", "pip", "install", "-q", "--disable-pip-version-check", *shlex.split(pip_args), "boto3"]
    return (
        f"if ! {python} -c 'import boto3' 2>/dev/null; then "
        f"{{ python3 -m venv {remote_path(TOOLS_VENV)} && {python} {shlex.join(pip)}; }} 1>&2 "
        f"|| exit {EXIT_TOOLS_FAILED}; fi"
    )


def restore_step(plan: MirrorPlan, output_dir: str) -> str:
    """Pull the job's mirror into its output directory (`~/...` expands there)."""
    pull = ["pull", *_region(plan), str(plan.url)]
    return (f"{remote_path(plan.python)} {remote_path(plan.script)} {shlex.join(pull)} {remote_path(output_dir)} 1>&2 "
            f"|| exit {EXIT_RESTORE_FAILED}")


def follow_words(plan: MirrorPlan, output_dir: str, pid_file: str) -> str:
    """The mirror's argv as shell words (for printf into the job dir): `~/` paths are left to expand."""
    options = ["follow", *_region(plan), "--every", f"{plan.every_s:g}"]
    return (f"{remote_path(plan.python)} {remote_path(plan.script)} {shlex.join(options)} "
            f"--pid-file {pid_file} {shlex.join([output_dir, str(plan.url)])}")


def program_path(name: str = SCRIPT_NAME) -> Path:
    """The mirror program (or its library) as packaged (awsrun/data, a link to infra/ in a checkout)."""
    return Path(__file__).resolve().parents[1] / "data" / name


def prepare_steps(plan: MirrorPlan, output_path: str) -> str:
    """Shell steps before the job starts: the mirror program and its venv in place, the mirror restored."""
    steps = []
    if plan.install_tools:
        folder = posixpath.dirname(plan.script)
        writes = [f"mkdir -p {remote_path(folder)}"]
        for name, target in ((LIBRARY_NAME, posixpath.join(folder, LIBRARY_NAME)), (SCRIPT_NAME, plan.script)):
            path = remote_path(target)
            writes.append(f"printf '%s' {shlex.quote(program_path(name).read_text())} > {path}.tmp && "
                          f"mv {path}.tmp {path}")
        steps += [tools_step(plan.pip_args), " && ".join(writes)]
    if plan.restore:
        steps.append(restore_step(plan, output_path))
    return "; ".join(steps) if steps else ":"
