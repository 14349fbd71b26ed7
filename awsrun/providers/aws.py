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
from awsrun.providers import aws_network_requests as net
from awsrun.providers import aws_requests as req
from awsrun.providers.aws_checkpoint_access import CheckpointAccess
from awsrun.providers.aws_errors import ErrorContext, ImageNotFound, translate
from awsrun.providers.aws_images import MoveImages
from awsrun.providers.aws_instances import Ec2Instance, instances_of
from awsrun.providers.aws_volumes import Ec2Volume

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


class AwsProvider(MoveImages, CheckpointAccess):
    """A small facade over the EC2, SSM and STS clients of one region (with the images of `start --move`
    and the S3 and IAM of the checkpoint mirror, in providers/aws_images.py and aws_checkpoint_access.py)."""

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

    def paginated_call(self, operation: str, key: str, context: ErrorContext | None = None,
                       **params: Any) -> list[dict[str, Any]]:
        """Every entry under `key` of an EC2 call's pages; errors become awsrun errors, as in `call`."""
        entries: list[dict[str, Any]] = []
        try:
            for page in self.ec2.get_paginator(operation).paginate(**params):
                entries += page.get(key, [])
        except Exception as exc:
            if not type(exc).__module__.startswith("botocore"):
                raise
            base = context or ErrorContext()
            full = dataclasses.replace(base, region=base.region or self.region, attempts=self.max_attempts)
            raise translate(exc, full) from None
        return entries

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
        entries = self.paginated_call("describe_spot_price_history", "SpotPriceHistory", ErrorContext(zone=zone),
                                      **request)
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
                  **net.import_key_pair_request(name, public_key, cluster, owner))
        return True

    def ensure_security_group(self, cluster: str, owner: str, vpc_id: str) -> tuple[str, bool]:
        request = net.security_group_request(cluster, owner, vpc_id)
        existing = self.find_security_group(request["GroupName"], vpc_id)
        if existing:
            return existing, False
        created = self.call("create_security_group", ok_codes=("InvalidGroup.Duplicate",), **request)
        if created is None:  # another awsrun made it a moment ago
            return self.find_security_group(request["GroupName"], vpc_id) or "", False
        group_id = created["GroupId"]
        self.call("authorize_security_group_ingress", ok_codes=("InvalidPermission.Duplicate",),
                  **net.nodes_ingress_request(group_id))
        return group_id, True

    def find_security_group(self, name: str, vpc_id: str) -> str | None:
        groups = self.call("describe_security_groups", Filters=[
            {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
        return groups[0]["GroupId"] if groups else None

    def allow_ssh(self, group_id: str, cidr: str) -> None:
        self.call("authorize_security_group_ingress", ok_codes=("InvalidPermission.Duplicate",),
                  **net.ssh_ingress_request(group_id, cidr))

    def ssh_sources(self, group_id: str) -> list[tuple[str, bool]]:
        """(CIDR, made by awsrun) for each rule of the group admitting SSH."""
        groups = self.call("describe_security_groups", GroupIds=[group_id])["SecurityGroups"]
        return net.ssh_sources(groups[0]) if groups else []

    def revoke_ssh(self, group_id: str, cidrs: list[str]) -> None:
        if cidrs:
            self.call("revoke_security_group_ingress", ok_codes=("InvalidPermission.NotFound",),
                      **net.ssh_revoke_request(group_id, cidrs))

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
        request = net.placement_group_request(cluster, owner)
        self.call("create_placement_group", ok_codes=("InvalidPlacementGroup.Duplicate",), **request)
        return request["GroupName"]

    def delete_placement_group(self, name: str) -> None:
        self.call("delete_placement_group", ok_codes=("InvalidPlacementGroup.Unknown",), GroupName=name)

    # instances -----------------------------------------------------------------------------------
    def run_instance(self, request: dict[str, Any], context: ErrorContext) -> Ec2Instance:
        return Ec2Instance.from_api(self.call("run_instances", context=context, **request)["Instances"][0])

    def describe(self, filters: list[dict[str, Any]]) -> list[Ec2Instance]:
        return instances_of(self.paginated_call("describe_instances", "Reservations", Filters=filters))

    def volumes(self, filters: list[dict[str, Any]]) -> list[Ec2Volume]:
        """The EBS volumes matching `filters` (awsrun's tags): attached ones, and those left without an instance."""
        return [Ec2Volume.from_api(v) for v in self.paginated_call("describe_volumes", "Volumes", Filters=filters)]

    def delete_volume(self, volume_id: str) -> None:
        """Delete a disk once its terminated instance has let go of it (seconds after the termination)."""
        try:
            self.ec2.get_waiter("volume_available").wait(VolumeIds=[volume_id],
                                                         WaiterConfig={"Delay": 5, "MaxAttempts": 36})
        except Exception as exc:
            if not type(exc).__module__.startswith("botocore"):
                raise
            if type(exc).__name__ != "WaiterError":
                raise translate(exc, ErrorContext(region=self.region)) from None
            now = self.volumes([{"Name": "volume-id", "Values": [volume_id]}])
            if not now or now[0].state in ("deleting", "deleted"):
                return  # deleted meanwhile (another `down`)
            raise CloudError(f"disk {volume_id} is {now[0].state}, not free of its instance after 180s: not deleted",
                             hint="`awsrun status` shows it; `awsrun delete-disk` deletes it once it is free") from None
        self.call("delete_volume", ok_codes=("InvalidVolume.NotFound",), VolumeId=volume_id)

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
