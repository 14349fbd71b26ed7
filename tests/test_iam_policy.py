"""infra/iam-policy.json and infra/iam-boundary-policy.json, evaluated: every AWS call awsrun makes is
allowed on what awsrun made (with the tags and boundary its own request builders put in the request), and
what escalates or touches other resources is denied: a role without the boundary, mutations of untagged
instances and groups, tags added after the fact. The evaluator (tests/harness/iam_policy.py) is a small one
of our own: moto's cannot express these conditions (its module docstring says why)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from awsrun.job import checkpoints
from awsrun.job.checkpoints import BucketUrl
from awsrun.providers import aws_network_requests as net
from awsrun.providers import aws_requests as req
from tests.harness.iam_policy import Request, allowed

ROOT = Path(__file__).resolve().parents[1]
POLICY = json.loads((ROOT / "infra" / "iam-policy.json").read_text())
BOUNDARY = json.loads((ROOT / "infra" / "iam-boundary-policy.json").read_text())
ACCOUNT, OTHER = "123456789012", "210987654321"
OWNER = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOUNDARY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/{checkpoints.BOUNDARY_NAME}"
ROLE = checkpoints.profile_name(BucketUrl("ckpt", "runs"), "default", OWNER)
WHO = {"aws:PrincipalAccount": ACCOUNT}


def ec2_arn(kind: str, ident: str = "x-0123456789abcdef0") -> str:
    return f"arn:aws:ec2:us-east-1:{'' if kind == 'image' else ACCOUNT}:{kind}/{ident}"


def request_tags(tag_specifications: list[dict], resource_type: str) -> dict[str, str]:
    """The aws:RequestTag/* and aws:TagKeys keys EC2 evaluates for one resource a request creates."""
    (spec,) = [s for s in tag_specifications if s["ResourceType"] == resource_type]
    context: dict = {f"aws:RequestTag/{t['Key']}": t["Value"] for t in spec["Tags"]}
    context["aws:TagKeys"] = [t["Key"] for t in spec["Tags"]]
    return context


TAGGED = {f"aws:ResourceTag/{req.TAG_CLUSTER}": "default", f"aws:ResourceTag/{req.TAG_OWNER}": OWNER}


def launch_spec(**changes) -> req.LaunchSpec:
    values = dict(cluster="default", owner=OWNER, node=0, launch_token="t" * 32, instance_type="g4dn.xlarge",
                  image_id="ami-1", root_device_name="/dev/sda1", volume_gb=100, key_name="awsrun-default-k",
                  security_group_id="sg-1")
    return req.LaunchSpec(**{**values, **changes})


def awsruns_own_calls() -> dict[str, list[Request]]:
    """Each operation awsrun's code calls, as the requests IAM sees for it on what awsrun made."""
    launch = req.run_instances_request(launch_spec(spot=True))
    group = net.security_group_request("default", OWNER, "vpc-1")
    key = net.import_key_pair_request("awsrun-default-k", "ssh-ed25519 AAAA", "default", OWNER)
    placement = net.placement_group_request("default", OWNER)
    role = req.create_role_request(ROLE, checkpoints.trust_policy(), BOUNDARY_ARN)
    image = req.move_image_request("i-0123456789abcdef0", "default", OWNER)
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
    on_role = {**WHO, "iam:PermissionsBoundary": role["PermissionsBoundary"]}
    instance = [Request("ec2:X", ec2_arn("instance"), TAGGED)]

    def same(action: str, requests: list[Request]) -> list[Request]:
        return [Request(action, r.resource, r.context) for r in requests]

    calls: dict[str, list[Request]] = {
        "run_instances": [
            Request("ec2:RunInstances", ec2_arn("instance"), request_tags(launch["TagSpecifications"], "instance")),
            Request("ec2:RunInstances", ec2_arn("volume"), request_tags(launch["TagSpecifications"], "volume")),
            Request("ec2:RunInstances", ec2_arn("spot-instances-request"),
                    request_tags(launch["TagSpecifications"], "spot-instances-request")),
            Request("ec2:RunInstances", ec2_arn("security-group", "sg-1"), TAGGED),
            Request("ec2:RunInstances", ec2_arn("image", "ami-1")),
            Request("ec2:RunInstances", ec2_arn("subnet")),
            Request("ec2:RunInstances", ec2_arn("network-interface")),
            Request("ec2:RunInstances", ec2_arn("key-pair")),
            Request("ec2:RunInstances", ec2_arn("placement-group")),
            Request("ec2:CreateTags", ec2_arn("instance"), {"ec2:CreateAction": "RunInstances"}),
        ],
        "create_security_group": [
            Request("ec2:CreateSecurityGroup", ec2_arn("security-group"),
                    request_tags(group["TagSpecifications"], "security-group")),
            Request("ec2:CreateSecurityGroup", ec2_arn("vpc", "vpc-1")),
            Request("ec2:CreateTags", ec2_arn("security-group"), {"ec2:CreateAction": "CreateSecurityGroup"}),
        ],
        "import_key_pair": [
            Request("ec2:ImportKeyPair", ec2_arn("key-pair"), request_tags(key["TagSpecifications"], "key-pair")),
            Request("ec2:CreateTags", ec2_arn("key-pair"), {"ec2:CreateAction": "ImportKeyPair"}),
        ],
        "create_placement_group": [
            Request("ec2:CreatePlacementGroup", ec2_arn("placement-group"),
                    request_tags(placement["TagSpecifications"], "placement-group")),
            Request("ec2:CreateTags", ec2_arn("placement-group"), {"ec2:CreateAction": "CreatePlacementGroup"}),
        ],
        "create_image": [
            Request("ec2:CreateImage", ec2_arn("instance"), TAGGED),
            Request("ec2:CreateImage", ec2_arn("image", "ami-1"), request_tags(image["TagSpecifications"], "image")),
            Request("ec2:CreateImage", ec2_arn("snapshot", "snap-1"),
                    request_tags(image["TagSpecifications"], "snapshot")),
            Request("ec2:CreateTags", ec2_arn("image", "ami-1"), {"ec2:CreateAction": "CreateImage"}),
        ],
        "deregister_image": [Request("ec2:DeregisterImage", ec2_arn("image", "ami-1"), TAGGED)],
        "delete_snapshot": [Request("ec2:DeleteSnapshot", ec2_arn("snapshot", "snap-1"), TAGGED)],
        "start_instances": same("ec2:StartInstances", instance),
        "stop_instances": same("ec2:StopInstances", instance),
        "terminate_instances": same("ec2:TerminateInstances", instance),
        "modify_instance_attribute": same("ec2:ModifyInstanceAttribute", instance),
        "get_console_output": same("ec2:GetConsoleOutput", instance),
        "associate_iam_instance_profile": same("ec2:AssociateIamInstanceProfile", instance) + [
            Request("iam:PassRole", role_arn, {"iam:PassedToService": "ec2.amazonaws.com"})],
        "cancel_spot_instance_requests": [
            Request("ec2:CancelSpotInstanceRequests", ec2_arn("spot-instances-request"), TAGGED)],
        "authorize_security_group_ingress": [
            Request("ec2:AuthorizeSecurityGroupIngress", ec2_arn("security-group"), TAGGED)],
        "revoke_security_group_ingress": [
            Request("ec2:RevokeSecurityGroupIngress", ec2_arn("security-group"), TAGGED)],
        "delete_security_group": [Request("ec2:DeleteSecurityGroup", ec2_arn("security-group"), TAGGED)],
        "delete_key_pair": [Request("ec2:DeleteKeyPair", ec2_arn("key-pair"), TAGGED)],
        "delete_placement_group": [Request("ec2:DeletePlacementGroup", ec2_arn("placement-group"), TAGGED)],
        "delete_volume": [Request("ec2:DeleteVolume", ec2_arn("volume"), TAGGED)],
        "create_role": [Request("iam:CreateRole", role_arn, on_role),
                        Request("iam:TagRole", role_arn, on_role)],
        "put_role_policy": [Request("iam:PutRolePolicy", role_arn, on_role)],
        "get_role": [Request("iam:GetRole", role_arn)],
        "get_instance_profile": [Request("iam:GetInstanceProfile", role_arn.replace(":role/", ":instance-profile/"))],
        "create_instance_profile": [
            Request("iam:CreateInstanceProfile", role_arn.replace(":role/", ":instance-profile/"))],
        "add_role_to_instance_profile": [
            Request("iam:AddRoleToInstanceProfile", role_arn.replace(":role/", ":instance-profile/")),
            Request("iam:PassRole", role_arn, {"iam:PassedToService": "ec2.amazonaws.com"})],
        "get_policy": [Request("iam:GetPolicy", BOUNDARY_ARN)],
        "head_bucket": [Request("s3:ListBucket", "arn:aws:s3:::ckpt")],
        "create_bucket": [Request("s3:CreateBucket", "arn:aws:s3:::ckpt")],
        "put_public_access_block": [Request("s3:PutBucketPublicAccessBlock", "arn:aws:s3:::ckpt")],
        "get_parameter": [Request("ssm:GetParameter", f"arn:aws:ssm:us-east-1::parameter{req.UBUNTU_PARAMETER}")],
        "get_caller_identity": [Request("sts:GetCallerIdentity", "*")],
        "request_service_quota_increase": [Request("servicequotas:RequestServiceQuotaIncrease", "*")],
    }
    for operation in ("describe_instances", "describe_volumes", "describe_images", "describe_vpcs", "describe_availability_zones",
                      "describe_instance_types", "describe_instance_type_offerings", "describe_spot_price_history",
                      "describe_key_pairs", "describe_security_groups", "describe_placement_groups",
                      "describe_iam_instance_profile_associations", "get_spot_placement_scores"):
        calls[operation] = [Request("ec2:" + "".join(p.capitalize() for p in operation.split("_")), "*")]
    for operation, action in (("list_service_quotas", "ListServiceQuotas"),
                              ("list_aws_default_service_quotas", "ListAWSDefaultServiceQuotas"),
                              ("list_requested_service_quota_change_history", "ListRequestedServiceQuotaChangeHistory"),
                              ("list_requested_service_quota_change_history_by_quota",
                               "ListRequestedServiceQuotaChangeHistoryByQuota")):
        calls[operation] = [Request(f"servicequotas:{action}", "*")]
    return calls


# create_policy is tried only when the boundary is missing, and an identity under this policy may not: an
# administrator makes the boundary once (infra/README.md); awsrun then says so in one line.
NOT_FOR_THIS_POLICY = {"create_policy"}


def operations_in_the_code() -> set[str]:
    """Every boto3 operation named in awsrun's code (awsrun.providers and the quota/doctor clients)."""
    text = "\n".join(p.read_text() for p in (ROOT / "awsrun").rglob("*.py") if "data" not in p.parts)
    found = set(re.findall(r'call\(\s*"([a-z_]+)"', text))
    found |= set(re.findall(r'get_paginator\("([a-z_]+)"\)', text))
    found |= set(re.findall(r'\.(?:ec2|sts|quotas|client\("s3"\))\.([a-z_]+)\(', text)) - {"get_paginator", "get_waiter"}
    found |= set(re.findall(r'"(list_[a-z_]+quota[a-z_]*)"', text))
    if 'get_waiter(' in text:
        found.add("describe_instances")   # the instance_* waiters poll DescribeInstances
    return found - NOT_FOR_THIS_POLICY


def test_every_call_awsrun_makes_is_named_here():
    assert operations_in_the_code() - set(awsruns_own_calls()) == set()


@pytest.mark.parametrize("operation", sorted(awsruns_own_calls()))
def test_awsruns_own_calls_are_allowed_on_what_awsrun_made(operation):
    for request in awsruns_own_calls()[operation]:
        assert allowed(Request(request.action, request.resource, {**WHO, **request.context}), POLICY), request


DENIED = {
    "a role without the boundary": Request("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}", {}),
    "a role under another boundary": Request("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
                                             {"iam:PermissionsBoundary": "arn:aws:iam::aws:policy/AdministratorAccess"}),
    "another account's boundary": Request("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
                                          {"iam:PermissionsBoundary": BOUNDARY_ARN.replace(ACCOUNT, OTHER)}),
    "an inline policy on a role without the boundary": Request(
        "iam:PutRolePolicy", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}", {}),
    "a role outside awsrun's names": Request("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/admin",
                                             {"iam:PermissionsBoundary": BOUNDARY_ARN}),
    "removing the boundary": Request("iam:DeleteRolePermissionsBoundary", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
                                     {"iam:PermissionsBoundary": BOUNDARY_ARN}),
    "replacing the boundary": Request("iam:PutRolePermissionsBoundary", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}", {}),
    "rewriting the boundary": Request("iam:CreatePolicyVersion", BOUNDARY_ARN),
    "attaching a managed policy": Request("iam:AttachRolePolicy", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
                                          {"iam:PermissionsBoundary": BOUNDARY_ARN}),
    "passing another role": Request("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin",
                                    {"iam:PassedToService": "ec2.amazonaws.com"}),
    "terminating an instance awsrun did not make": Request("ec2:TerminateInstances", ec2_arn("instance")),
    "stopping one": Request("ec2:StopInstances", ec2_arn("instance")),
    "reading its console": Request("ec2:GetConsoleOutput", ec2_arn("instance")),
    "giving it a profile": Request("ec2:AssociateIamInstanceProfile", ec2_arn("instance")),
    "opening another group": Request("ec2:AuthorizeSecurityGroupIngress", ec2_arn("security-group")),
    "closing another group": Request("ec2:RevokeSecurityGroupIngress", ec2_arn("security-group")),
    "deleting another group": Request("ec2:DeleteSecurityGroup", ec2_arn("security-group")),
    "deleting another key pair": Request("ec2:DeleteKeyPair", ec2_arn("key-pair")),
    "deleting a disk awsrun did not make": Request("ec2:DeleteVolume", ec2_arn("volume")),
    "imaging an instance awsrun did not make": Request("ec2:CreateImage", ec2_arn("instance")),
    "an untagged image": Request("ec2:CreateImage", ec2_arn("image", "ami-1")),
    "deregistering another image": Request("ec2:DeregisterImage", ec2_arn("image", "ami-1")),
    "deleting another snapshot": Request("ec2:DeleteSnapshot", ec2_arn("snapshot", "snap-1")),
    "launching untagged": Request("ec2:RunInstances", ec2_arn("instance")),
    "launching with a volume untagged": Request("ec2:RunInstances", ec2_arn("volume"),
                                                {"aws:RequestTag/Name": "x", "aws:TagKeys": ["Name"]}),
    "launching into a group awsrun did not make": Request("ec2:RunInstances", ec2_arn("security-group")),
    "an untagged group": Request("ec2:CreateSecurityGroup", ec2_arn("security-group")),
    "tagging an existing instance as awsrun's": Request(
        "ec2:CreateTags", ec2_arn("instance"), {"aws:RequestTag/awsrun:cluster": "x", "aws:TagKeys": ["awsrun:cluster"]}),
}


@pytest.mark.parametrize("case", sorted(DENIED))
def test_escalation_and_other_resources_are_denied(case):
    request = DENIED[case]
    assert not allowed(Request(request.action, request.resource, {**WHO, **request.context}), POLICY), case


def role_may(action: str, resource: str, inline: dict, resource_account: str = ACCOUNT) -> bool:
    context = {**WHO, "aws:ResourceAccount": resource_account}
    return allowed(Request(action, resource, context), inline, boundary=BOUNDARY)


def test_the_boundary_caps_a_checkpoint_role_whatever_inline_policy_it_gets():
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    for action, resource in (("iam:CreateUser", "arn:aws:iam::123456789012:user/x"), ("ec2:RunInstances", "*"),
                             ("sts:AssumeRole", "arn:aws:iam::123456789012:role/admin"),
                             ("s3:PutBucketPolicy", "arn:aws:s3:::ckpt")):
        assert not role_may(action, resource, everything), action
    assert not role_may("s3:GetObject", "arn:aws:s3:::elsewhere/k", everything, resource_account=OTHER)
    assert role_may("s3:PutObject", "arn:aws:s3:::ckpt/runs/default/work/k", everything)


def test_a_jobs_role_reaches_its_own_prefix_only():
    job = checkpoints.job_url(BucketUrl("ckpt", "runs"), "default", "work")
    inline = json.loads(checkpoints.access_policy(job))
    assert role_may("s3:PutObject", "arn:aws:s3:::ckpt/runs/default/work/ckpt.pt", inline)
    assert role_may("s3:GetObject", "arn:aws:s3:::ckpt/runs/default/work/a/b", inline)
    for other in ("runs/default/work2/x", "runs/other/work/x", "runs/x", "elsewhere/x"):
        assert not role_may("s3:GetObject", f"arn:aws:s3:::ckpt/{other}", inline), other


def test_a_jobs_role_lists_its_own_prefix_only():
    inline = json.loads(checkpoints.access_policy(checkpoints.job_url(BucketUrl("ckpt", "runs"), "default", "w")))
    listing = {**WHO, "aws:ResourceAccount": ACCOUNT}
    assert allowed(Request("s3:ListBucket", "arn:aws:s3:::ckpt", {**listing, "s3:prefix": "runs/default/w/"}),
                   inline, BOUNDARY)
    for prefix in ("runs/", "runs/default/", "runs/default/w2/", ""):
        assert not allowed(Request("s3:ListBucket", "arn:aws:s3:::ckpt", {**listing, "s3:prefix": prefix}),
                           inline, BOUNDARY), prefix
