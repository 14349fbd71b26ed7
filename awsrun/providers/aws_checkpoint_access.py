"""S3 and IAM for the checkpoint mirror (awsrun.job.checkpoints): the bucket (private, this account's), the
permissions boundary, the instance profile whose role the instance's mirror runs as, and attaching it.
Part of AwsProvider (providers/aws.py), whose `call`, `client`, `caller_arn` and `region` these methods use.
"""
from __future__ import annotations

import time

from awsrun.providers import aws_requests as req
from awsrun.providers.aws_errors import AccessDeniedError, ErrorContext, translate


class CheckpointAccess:
    def ensure_bucket(self, bucket: str, owner: str) -> bool:
        """The bucket exists and account `owner` owns it (made private in this region when missing): True
        when it was made now. Bucket names are global: one another account made, open to all, is refused."""
        try:
            self.client("s3").head_bucket(Bucket=bucket, ExpectedBucketOwner=owner)
            return False
        except Exception as exc:
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            if code in ("403", "Forbidden"):
                raise AccessDeniedError(
                    f"S3 bucket {bucket} exists but is not your account's ({owner}) to use (another account owns "
                    "it, or a policy denies it)", hint="bucket names are global: pick another --checkpoint-bucket") from None
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise translate(exc, ErrorContext(region=self.region)) from None
        where = {} if self.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": self.region}}
        self.call("create_bucket", service="s3", ok_codes=("BucketAlreadyOwnedByYou",), Bucket=bucket, **where)
        self.call("put_public_access_block", service="s3", Bucket=bucket, ExpectedBucketOwner=owner,
                  PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                                  "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        return True

    def account_id(self) -> str:
        if not getattr(self, "_account", None):
            self._account = self.caller_arn().split(":")[4]
        return self._account

    def ensure_boundary(self, name: str, document: str) -> str:
        """The ARN of managed policy NAME of this account (the checkpoint roles' permissions boundary), made
        from `document` when missing; an identity that may not create it gets the command for an admin."""
        arn = f"arn:aws:iam::{self.account_id()}:policy/{name}"
        if self.call("get_policy", service="iam", ok_codes=("NoSuchEntity",), PolicyArn=arn) is None:
            try:
                self.call("create_policy", service="iam", ok_codes=("EntityAlreadyExists",), PolicyName=name,
                          PolicyDocument=document, Description="awsrun: the most a checkpoint mirror role may do")
            except AccessDeniedError as exc:
                exc.message = f"the permissions boundary {arn} is missing and you may not create it"
                exc.hint = (f"an administrator creates it once: aws iam create-policy --policy-name {name} "
                            "--policy-document file://infra/iam-boundary-policy.json")
                raise
        return arn

    def ensure_instance_profile(self, name: str, trust_policy: str, policy_name: str, policy: str,
                                boundary_arn: str) -> bool:
        """Role NAME (EC2 may assume it, capped by the boundary) with the inline policy, in instance profile
        NAME: True when made now."""
        made = False
        if self.call("get_role", service="iam", ok_codes=("NoSuchEntity",), RoleName=name) is None:
            self.call("create_role", service="iam", **req.create_role_request(name, trust_policy, boundary_arn))
            made = True
        self.call("put_role_policy", service="iam", RoleName=name, PolicyName=policy_name, PolicyDocument=policy)
        found = self.call("get_instance_profile", service="iam", ok_codes=("NoSuchEntity",), InstanceProfileName=name)
        if found is None:
            found = self.call("create_instance_profile", service="iam", InstanceProfileName=name)
            made = True
        if not any(role["RoleName"] == name for role in found["InstanceProfile"].get("Roles", [])):
            self.call("add_role_to_instance_profile", service="iam", InstanceProfileName=name, RoleName=name)
        return made

    def instance_profile_of(self, instance_id: str) -> str | None:
        """The ARN of the instance profile the instance has (or is getting), if any."""
        found = self.call("describe_iam_instance_profile_associations", Filters=[
            {"Name": "instance-id", "Values": [instance_id]},
            {"Name": "state", "Values": ["associating", "associated"]}])
        associations = found.get("IamInstanceProfileAssociations", [])
        return associations[0]["IamInstanceProfile"]["Arn"] if associations else None

    def associate_instance_profile(self, instance_id: str, name: str, wait_s: float = 90.0) -> None:
        """Attach instance profile NAME; a profile made seconds ago is refused as invalid until IAM has
        spread it (eventual consistency), so that answer is retried for up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        while self.call("associate_iam_instance_profile", context=ErrorContext(instance_id=instance_id),
                        ok_codes=("InvalidParameterValue",) if time.monotonic() < deadline else (),
                        IamInstanceProfile={"Name": name}, InstanceId=instance_id) is None:
            self._sleep(3.0)
