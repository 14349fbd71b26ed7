"""What a mirrored job's instance may reach, against moto's IAM, EC2 and S3: the cluster's role is created
under awsrun's permissions boundary, each job's inline policy names only its own prefix (BASE/CLUSTER/
SESSION), another cluster gets another role, and a bucket another account owns is refused, by `submit`
here and by the mirror program on the instance (ExpectedBucketOwner)."""
from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import unquote

import boto3
import pytest

from awsrun.job import checkpoints, recover
from awsrun.job.checkpoints import BucketUrl
from awsrun.providers.aws import AwsProvider
from awsrun.providers.aws_errors import AccessDeniedError
from tests.harness.cli import REPO, guarded_env
from tests.harness.ec2_endpoint import ACCOUNT_ID

OWNER = f"arn:aws:sts::{ACCOUNT_ID}:user/moto"
OTHER_ACCOUNT = "210987654321"
BASE = BucketUrl("ckpt-bucket", "team/runs")


def launch(aws) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=aws.url)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


def inline_policies(iam, role: str) -> dict[str, dict]:
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    found = {}
    for name in names:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        found[name] = json.loads(unquote(document)) if isinstance(document, str) else document
    return found


def object_resources(policy: dict) -> list[str]:
    return [s["Resource"] for s in policy["Statement"] if "s3:GetObject" in s["Action"]]


def test_a_clusters_role_is_bounded_and_each_job_reaches_only_its_own_prefix(aws):
    provider = AwsProvider("us-east-1")
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=aws.url)
    first, other = launch(aws), launch(aws)

    recover.grant_access(provider, first, BASE, "default", OWNER, "work")
    recover.grant_access(provider, first, BASE, "default", OWNER, "sweep-2")
    recover.grant_access(provider, other, BASE, "exp", OWNER, "work")

    role = checkpoints.profile_name(BASE, "default", OWNER)
    boundary = f"arn:aws:iam::{ACCOUNT_ID}:policy/{checkpoints.BOUNDARY_NAME}"
    assert iam.get_role(RoleName=role)["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    version = iam.get_policy(PolicyArn=boundary)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=boundary, VersionId=version)["PolicyVersion"]["Document"]
    shipped = json.loads((REPO / "infra" / "iam-boundary-policy.json").read_text())
    assert (json.loads(unquote(document)) if isinstance(document, str) else document) == shipped

    policies = inline_policies(iam, role)
    assert {name: object_resources(p) for name, p in policies.items()} == {
        "awsrun-mirror-work": ["arn:aws:s3:::ckpt-bucket/team/runs/default/work/*"],
        "awsrun-mirror-sweep-2": ["arn:aws:s3:::ckpt-bucket/team/runs/default/sweep-2/*"],
    }
    other_role = checkpoints.profile_name(BASE, "exp", OWNER)
    assert other_role != role
    assert {n: object_resources(p) for n, p in inline_policies(iam, other_role).items()} == {
        "awsrun-mirror-work": ["arn:aws:s3:::ckpt-bucket/team/runs/exp/work/*"]}
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=aws.url)
    attached = {a["InstanceId"]: a["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
                for a in ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]}
    assert attached == {first: role, other: other_role}


@pytest.fixture
def someone_elses_bucket(aws):
    """A bucket of another account under the name a job would use, open to everyone (moto serves other
    accounts' buckets across accounts, as S3 does with a permissive bucket policy)."""
    from moto.s3.models import s3_backends

    s3_backends[OTHER_ACCOUNT]["aws"].create_bucket("theirs-bucket", "us-east-1")
    yield "theirs-bucket"
    s3_backends[OTHER_ACCOUNT]["aws"].delete_bucket("theirs-bucket")


def test_submit_refuses_a_bucket_another_account_owns(aws, someone_elses_bucket):
    provider = AwsProvider("us-east-1")
    with pytest.raises(AccessDeniedError) as refused:
        recover.ensure_bucket(provider, BucketUrl(someone_elses_bucket), provider.account_id())
    assert "another account owns it" in refused.value.message
    assert recover.ensure_bucket(provider, BucketUrl("mine-bucket"), provider.account_id())  # made, ours


def test_the_mirror_program_refuses_a_bucket_another_account_owns(aws, someone_elses_bucket, tmp_path):
    boto3.client("s3", region_name="us-east-1", endpoint_url=aws.url).create_bucket(Bucket="mine-bucket")
    outputs = tmp_path / "runs" / "work"
    outputs.mkdir(parents=True)
    (outputs / "ckpt.json").write_text("{}")
    env = guarded_env({"AWS_ENDPOINT_URL": aws.url})

    def push(bucket: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "infra" / "awsrun-checkpoints.py"), "push",
                               "--expected-owner", ACCOUNT_ID, str(outputs), f"s3://{bucket}/p"],
                              env=env, capture_output=True, text=True, timeout=60)

    theirs = push(someone_elses_bucket)
    assert theirs.returncode == 1 and "access denied" in theirs.stderr, theirs
    from moto.s3.models import s3_backends
    assert list(s3_backends[OTHER_ACCOUNT]["aws"].get_bucket(someone_elses_bucket).keys) == []
    mine = push("mine-bucket")
    assert mine.returncode == 0 and "pushed 1 files" in mine.stdout, mine
