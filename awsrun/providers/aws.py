"""EC2, IAM and S3 through boto3; with providers/aws_clients.py (doctor's and quota's clients), the only
modules that import it, lazily: `awsrun --help` never pays for it.

Credentials, region and endpoint come from boto3's own chain (AWS_PROFILE, AWS_REGION,
AWS_ENDPOINT_URL, ...). botocore retries throttling and transient errors ("standard" mode, bounded
attempts); waiters have explicit bounds; every error leaves through awsrun.providers.aws_errors.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from awsrun.errors import CloudError, ConfigError
from awsrun.providers import aws_requests as req
from awsrun.providers.aws_errors import AccessDeniedError, ErrorContext, ImageNotFound, translate
from awsrun.providers.aws_requests import Ec2Instance

MAX_ATTEMPTS = 5
# (waiter name, seconds between polls, polls): a GPU instance usually runs within 1-2 minutes and
# stops within a few; past these bounds something is wrong and the user should hear about it.
WAITS = {
    "running": ("instance_running", 5, 72),
    "stopped": ("instance_stopped", 5, 120),
    "terminated": ("instance_terminated", 5, 120),
}
DEPENDENCY_WAIT_S = 180.0  # a terminated instance's network interface lingers before its group can go


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    root_device_name: str
    root_device_type: str
    snapshot_gb: int | None


class AwsProvider:
    """A small facade over the EC2, SSM and STS clients of one region."""

    def __init__(self, region: str | None = None, *, max_attempts: int | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        import boto3
        from botocore.config import Config

        from awsrun.providers.aws_clients import requested_region

        try:
            self._session = boto3.session.Session(region_name=requested_region(region))
        except Exception as exc:  # a broken profile or config file
            raise translate(exc) from None
        if not self._session.region_name:
            raise ConfigError("no AWS region is configured",
                              hint="pass --region, set AWS_REGION, or run `aws configure set region us-east-1`")
        self.region: str = self._session.region_name
        # AWS_MAX_ATTEMPTS (or the profile's max_attempts) wins: boto3's own chain, read from its session.
        chain = self._session._session  # the botocore session behind boto3's
        self.max_attempts = int(max_attempts or chain.get_config_variable("max_attempts") or MAX_ATTEMPTS)
        self._config = Config(retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                              connect_timeout=10, read_timeout=60)
        self._clients: dict[str, Any] = {}
        self._sleep = sleep

    def quick(self) -> "AwsProvider":
        """The same session with one attempt per call and short timeouts: for optional look-ups that
        must not hold a command up when AWS is unreachable."""
        from botocore.config import Config

        other = object.__new__(AwsProvider)
        other.__dict__.update(self.__dict__)
        other.max_attempts = 1
        other._config = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=3, read_timeout=10)
        other._clients = {}
        return other

    def client(self, service: str) -> Any:
        if service not in self._clients:
            try:
                self._clients[service] = self._session.client(service, config=self._config)
            except Exception as exc:
                raise translate(exc) from None
        return self._clients[service]

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    def call(self, operation: str, *, service: str = "ec2", context: ErrorContext | None = None,
             ok_codes: tuple[str, ...] = (), **params: Any) -> dict[str, Any] | None:
        """One API call; errors become awsrun errors, except codes in `ok_codes`, which return None."""
        try:
            return getattr(self.client(service), operation)(**params)
        except Exception as exc:
            if not type(exc).__module__.startswith("botocore"):
                raise
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            if code and any(code == ok or code.startswith(ok + ".") for ok in ok_codes):
                return None
            base = context or ErrorContext()
            full = dataclasses.replace(base, region=base.region or self.region, attempts=self.max_attempts)
            raise translate(exc, full) from None

    # identity, images, network ------------------------------------------------------------------
    def caller_arn(self) -> str:
        return self.call("get_caller_identity", service="sts")["Arn"]

    def resolve_image(self, ami: str) -> Image:
        """'ubuntu' / 'dlami' through the public SSM parameter of this region; an ami-... id as is."""
        parameter = req.ami_parameter(ami)
        image_id = ami
        if parameter is not None:
            found = self.call("get_parameter", service="ssm", ok_codes=("ParameterNotFound",), Name=parameter)
            if found is None:
                raise ImageNotFound(f"no {ami} image is published in {self.region} (SSM parameter {parameter})",
                                    hint="pick another region (--region) or pass --ami ami-... from this region")
            image_id = found["Parameter"]["Value"]
        images = self.call("describe_images", context=ErrorContext(ami=image_id), ImageIds=[image_id])["Images"]
        if not images:
            raise ImageNotFound(f"AMI {image_id} does not exist in {self.region}",
                                hint="AMI ids differ per region: use --ami ubuntu or --ami dlami")
        image = images[0]
        root = image.get("RootDeviceName", "/dev/sda1")
        snapshot = next((m.get("Ebs", {}).get("VolumeSize") for m in image.get("BlockDeviceMappings", [])
                         if m.get("DeviceName") == root), None)
        return Image(image_id, image.get("Name", ""), root, image.get("RootDeviceType", "ebs"), snapshot)

    def default_vpc(self) -> str:
        vpcs = self.call("describe_vpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise CloudError(f"region {self.region} has no default VPC",
                             hint=f"create one with `aws ec2 create-default-vpc --region {self.region}`")
        return vpcs[0]["VpcId"]

    def zones_for(self, instance_type: str) -> list[str]:
        """The zones offering the type (all available zones when the region does not say)."""
        offers = self.call("describe_instance_type_offerings", LocationType="availability-zone",
                           Filters=[{"Name": "instance-type", "Values": [instance_type]}])
        zones = sorted({o["Location"] for o in offers.get("InstanceTypeOfferings", [])})
        if zones:
            return zones
        described = self.call("describe_availability_zones",
                              Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
        return sorted(z["ZoneName"] for z in described)

    def spot_prices(self, instance_type: str, zone: str | None = None) -> dict[str, float]:
        """The current spot price per zone; empty when the region publishes none."""
        return self.spot_price_table([instance_type], zone).get(instance_type, {})

    def spot_price_table(self, instance_types: list[str], zone: str | None = None) -> dict[str, dict[str, float]]:
        """{type: {zone: current spot USD/hour}}, one paginated call for all the types."""
        if not instance_types:
            return {}
        request = req.spot_price_history_request(instance_types, zone, datetime.now(timezone.utc))
        entries: list[dict[str, Any]] = []
        try:
            for page in self.ec2.get_paginator("describe_spot_price_history").paginate(**request):
                entries += page.get("SpotPriceHistory", [])
        except Exception as exc:
            if not type(exc).__module__.startswith("botocore"):
                raise
            raise translate(exc, ErrorContext(region=self.region, zone=zone, attempts=self.max_attempts)) from None
        return req.latest_spot_prices(entries)

    def spot_placement_scores(self, instance_type: str) -> dict[str, int]:
        """{zone: EC2's spot placement score 1-10} for one instance of the type; empty when the identity may
        not read them (ec2:GetSpotPlacementScores) or the endpoint lacks the call: they only order zones."""
        quick = self.quick()
        try:
            reply = quick.call("get_spot_placement_scores",
                               **req.spot_placement_scores_request(instance_type, self.region))
            zones = quick.call("describe_availability_zones")["AvailabilityZones"]
        except (CloudError, ConfigError):
            return {}
        return req.scores_by_zone(reply.get("SpotPlacementScores", []),
                                  {z["ZoneId"]: z["ZoneName"] for z in zones if "ZoneId" in z})

    # what awsrun creates besides instances --------------------------------------------------------
    def ensure_key_pair(self, name: str, public_key: str, cluster: str, owner: str) -> bool:
        """Import the public half under `name` unless it is there already; True when imported now."""
        found = self.call("describe_key_pairs", ok_codes=("InvalidKeyPair.NotFound",), KeyNames=[name])
        if found and found.get("KeyPairs"):
            return False
        self.call("import_key_pair", ok_codes=("InvalidKeyPair.Duplicate",),
                  **req.import_key_pair_request(name, public_key, cluster, owner))
        return True

    def ensure_security_group(self, cluster: str, owner: str, vpc_id: str) -> tuple[str, bool]:
        request = req.security_group_request(cluster, owner, vpc_id)
        existing = self.find_security_group(request["GroupName"], vpc_id)
        if existing:
            return existing, False
        created = self.call("create_security_group", ok_codes=("InvalidGroup.Duplicate",), **request)
        if created is None:  # another awsrun made it a moment ago
            return self.find_security_group(request["GroupName"], vpc_id) or "", False
        group_id = created["GroupId"]
        self.call("authorize_security_group_ingress", ok_codes=("InvalidPermission.Duplicate",),
                  **req.nodes_ingress_request(group_id))
        return group_id, True

    def find_security_group(self, name: str, vpc_id: str) -> str | None:
        groups = self.call("describe_security_groups", Filters=[
            {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
        return groups[0]["GroupId"] if groups else None

    def allow_ssh(self, group_id: str, cidr: str) -> None:
        self.call("authorize_security_group_ingress", ok_codes=("InvalidPermission.Duplicate",),
                  **req.ssh_ingress_request(group_id, cidr))

    def ssh_sources(self, group_id: str) -> list[tuple[str, bool]]:
        """(CIDR, made by awsrun) for each rule of the group admitting SSH."""
        groups = self.call("describe_security_groups", GroupIds=[group_id])["SecurityGroups"]
        return req.ssh_sources(groups[0]) if groups else []

    def revoke_ssh(self, group_id: str, cidrs: list[str]) -> None:
        if cidrs:
            self.call("revoke_security_group_ingress", ok_codes=("InvalidPermission.NotFound",),
                      **req.ssh_revoke_request(group_id, cidrs))

    def tagged_security_groups(self, cluster: str, owner: str) -> list[str]:
        groups = self.call("describe_security_groups", Filters=req.cluster_filters(cluster, owner))
        return [g["GroupId"] for g in groups["SecurityGroups"]]

    def tagged_key_pairs(self, cluster: str, owner: str) -> list[str]:
        pairs = self.call("describe_key_pairs", Filters=req.cluster_filters(cluster, owner))
        return [p["KeyName"] for p in pairs["KeyPairs"]]

    def delete_security_group(self, group_id: str) -> None:
        """Deleted, or already gone. Retries while a terminated instance's interface still holds it."""
        deadline = time.monotonic() + DEPENDENCY_WAIT_S
        while True:
            try:
                self.ec2.delete_security_group(GroupId=group_id)
                return
            except Exception as exc:
                code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
                if code.startswith("InvalidGroup.NotFound"):
                    return
                if code != "DependencyViolation" or time.monotonic() > deadline:
                    error = translate(exc)
                    error.hint = error.hint or "re-run `awsrun down` in a minute"
                    raise error from None
            self._sleep(5)

    def delete_key_pair(self, name: str) -> None:
        self.call("delete_key_pair", ok_codes=("InvalidKeyPair.NotFound",), KeyName=name)

    def create_placement_group(self, cluster: str, owner: str) -> str:
        request = req.placement_group_request(cluster, owner)
        self.call("create_placement_group", ok_codes=("InvalidPlacementGroup.Duplicate",), **request)
        return request["GroupName"]

    def delete_placement_group(self, name: str) -> None:
        self.call("delete_placement_group", ok_codes=("InvalidPlacementGroup.Unknown",), GroupName=name)

    # instances -----------------------------------------------------------------------------------
    def run_instance(self, request: dict[str, Any], context: ErrorContext) -> Ec2Instance:
        return Ec2Instance.from_api(self.call("run_instances", context=context, **request)["Instances"][0])

    def describe(self, filters: list[dict[str, Any]]) -> list[Ec2Instance]:
        found: list[Ec2Instance] = []
        try:
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
                found += req.instances_of(page.get("Reservations", []))
        except Exception as exc:
            if not type(exc).__module__.startswith("botocore"):
                raise
            raise translate(exc, ErrorContext(region=self.region, attempts=self.max_attempts)) from None
        return found

    def describe_ids(self, ids: list[str]) -> list[Ec2Instance]:
        """By id through a filter: unknown (long-terminated) ids are simply absent, not an error."""
        return self.describe([{"Name": "instance-id", "Values": list(ids)}]) if ids else []

    def wait(self, ids: list[str], state: str) -> None:
        name, delay, attempts = WAITS[state]
        try:
            self.ec2.get_waiter(name).wait(InstanceIds=ids, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
        except Exception as exc:
            if type(exc).__name__ != "WaiterError":
                raise translate(exc, ErrorContext(region=self.region)) from None
            now = {i.id: i for i in self.describe_ids(ids)}
            states = ", ".join(f"{i} {now[i].state if i in now else 'gone'}"
                               + (f" ({now[i].state_reason})" if i in now and now[i].state_reason else "")
                               for i in ids)
            raise CloudError(f"instance did not become {state} within {delay * attempts}s: {states}",
                             hint="`awsrun status` shows where it is now; `awsrun down` removes it") from None

    def stop(self, ids: list[str]) -> None:
        for instance_id in ids:  # one by one, so an error names the instance it is about
            self.call("stop_instances", context=ErrorContext(instance_id=instance_id), InstanceIds=[instance_id])

    def start(self, ids: list[str]) -> None:
        self.call("start_instances", InstanceIds=ids)

    def terminate(self, ids: list[str]) -> None:
        self.call("terminate_instances", InstanceIds=ids)

    def cancel_spot_requests(self, request_ids: list[str]) -> None:
        """A persistent request relaunches a terminated instance: cancel it first (EC2 user guide)."""
        if request_ids:
            self.call("cancel_spot_instance_requests", ok_codes=("InvalidSpotInstanceRequestID",),
                      SpotInstanceRequestIds=request_ids)

    # images of a stopped instance (`start --move`) ---------------------------------------------------------
    def create_move_image(self, instance_id: str, cluster: str, owner: str) -> str:
        """An image of the stopped instance's disk; its snapshots carry the cluster's tags too."""
        request = req.move_image_request(instance_id, cluster, owner)
        return self.call("create_image", context=ErrorContext(instance_id=instance_id), **request)["ImageId"]

    def move_images(self, cluster: str, owner: str) -> dict[str, str]:
        """{image id: the instance it was made of} for the cluster's `start --move` images."""
        images = self.call("describe_images", Owners=["self"], Filters=req.cluster_filters(cluster, owner))["Images"]
        return {i["ImageId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(req.TAG_MOVED_FROM, "")
                for i in images}

    def image_snapshots(self, image_id: str) -> list[str]:
        images = self.call("describe_images", ImageIds=[image_id])["Images"]
        return [m["Ebs"]["SnapshotId"] for i in images for m in i.get("BlockDeviceMappings", [])
                if m.get("Ebs", {}).get("SnapshotId")]

    def wait_image(self, image_id: str) -> None:
        try:
            self.ec2.get_waiter("image_available").wait(ImageIds=[image_id],
                                                        WaiterConfig={"Delay": 10, "MaxAttempts": 180})
        except Exception as exc:
            if type(exc).__name__ != "WaiterError":
                raise translate(exc, ErrorContext(region=self.region)) from None
            raise CloudError(f"the image {image_id} of the disk did not become available within 30 minutes",
                             hint="`awsrun start --move` again continues with it; `awsrun down` removes it") from None

    def delete_image(self, image_id: str) -> None:
        """Deregister the image, then delete its snapshots (an image's snapshot cannot go first)."""
        snapshots = self.image_snapshots(image_id) if self.call(
            "describe_images", ok_codes=("InvalidAMIID",), ImageIds=[image_id]) else []
        self.call("deregister_image", ok_codes=("InvalidAMIID",), ImageId=image_id)
        for snapshot in snapshots:
            self.call("delete_snapshot", ok_codes=("InvalidSnapshot.NotFound",), SnapshotId=snapshot)

    def set_shutdown_behavior(self, instance_id: str, behavior: str) -> None:
        """What a shutdown from inside the instance does: stop (the default) or terminate."""
        self.call("modify_instance_attribute", context=ErrorContext(instance_id=instance_id),
                  **req.shutdown_behavior_request(instance_id, behavior))

    def console_output(self, instance_id: str) -> str:
        """The boot console (cloud-init prints the host key fingerprints there); '' when not yet there.

        Latest=True asks for the console as it is now: without it EC2 serves a snapshot taken at a few boot
        events, which often predates cloud-init's fingerprints. Instance types that are not on Nitro refuse
        Latest (UnsupportedOperation), and get the snapshot."""
        found = self.call("get_console_output", ok_codes=("InvalidInstanceID", "UnsupportedOperation"),
                          InstanceId=instance_id, Latest=True)
        if found is None:
            found = self.call("get_console_output", ok_codes=("InvalidInstanceID", "UnsupportedOperation"),
                              InstanceId=instance_id)
        return (found or {}).get("Output") or ""

    # S3 and IAM for the checkpoint mirror (awsrun.checkpoints) ------------------------------------------
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
