"""A real EC2/SSM/S3/STS HTTP endpoint: moto in server mode on a loopback port, in this process.

MOTO_AMIS_PATH must be set before moto is imported (conftest does it). Public SSM parameters under
/aws/service/ are reserved names that the API refuses to write, so they are seeded into moto's
in-process backend after every reset.
"""
from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
ACCOUNT_ID = "123456789012"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
UBUNTU_2204_PARAM = "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"
UBUNTU_2404_PARAM = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
DLAMI_PARAM = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
PUBLIC_PARAMETERS = {
    UBUNTU_2204_PARAM: "ami-0ubuntu2204a",
    UBUNTU_2404_PARAM: "ami-0ubuntu2404a",
    DLAMI_PARAM: "ami-0dlamibase1",
}


# EC2's vCPU quotas by name (codes as AWS has them). Moto's Service Quotas serves only `vpc`; the harness
# teaches its in-process backend these, with generous applied values unless a test sets others.
EC2_QUOTAS = {
    "L-1216C47A": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    "L-DB2E81BA": "Running On-Demand G and VT instances",
    "L-417A185B": "Running On-Demand P instances",
    "L-34B43A08": "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
    "L-3819A6DF": "All G and VT Spot Instance Requests",
    "L-7212CCBC": "All P Spot Instance Requests",
}
DEFAULT_APPLIED_VCPUS = 512.0
_applied_quotas: dict[str, float] = {}
# Types moto's offering data lacks (the classic K80 box among them): offered in every zone of REGIONS.
EXTRA_OFFERED_TYPES = ("p2.xlarge", "p2.8xlarge", "p2.16xlarge", "p3.2xlarge", "p3.8xlarge")
# Spot prices a test seeded with `set_spot_prices`: {region: {(type, zone): USD/hour}}. Moto answers every
# offered type and zone with the placeholder 0.00001 (dated 2006); a seeded type gets its prices instead.
_spot_prices: dict[str, dict[tuple[str, str], float]] = {}
# The parameters of every RunInstances since the last reset, as sent ({"InstanceMarketOptions.MarketType":
# "spot", ...}): moto keeps only the market type, so tests read the spot options here.
_launch_requests: list[dict[str, str]] = []
# Placement groups, once a test called `serve_placement_groups` ({region: {name: group}}); moto itself answers
# their API with HTTP 500, and until then (and after every reset) so does the harness.
_placement_groups: dict[str, dict[str, dict]] = {}
_placement_groups_served: list[bool] = [False]
# The boot console: cloud-init's host key fingerprints of the loopback hosts (the fleet registers them, since
# which host an instance becomes is decided at its first connection), shown from the N+1th GetConsoleOutput
# of each instance, N being `_console_withheld[0]` (None: never shown), as EC2 shows them a while after boot.
_boot_fingerprints: list[str] = []
_console_withheld: list[int | None] = [0]
_console_requests: list[dict[str, str]] = []
# Launch faults a test injected with `fail_launches`: EC2's capacity and quota refusals, which moto never
# gives. Each rule: {"code", "message", "region", "zone", "instance_type", "market", "times"}; None = any.
_launch_faults: list[dict] = []
# StartInstances refusals (`fail_starts`): a stopped instance whose zone has no capacity now.
_start_faults: list[dict] = []
# Operations refused as to an identity whose IAM policy lacks them (`deny`), e.g. an older awsrun policy.
_denied: set[str] = set()
# Spot placement scores a test seeded with `set_spot_placement_scores` ({region: {zone name: score}}); in a
# region without any, GetSpotPlacementScores is refused as for an identity without the permission.
_placement_scores: dict[str, dict[str, int]] = {}


@dataclass
class Ec2Endpoint:
    url: str
    server: object

    @classmethod
    def start(cls) -> "Ec2Endpoint":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        extend_moto()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = cls(url=f"http://{host}:{port}", server=server)
        endpoint.reset()
        return endpoint

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        seed_public_parameters()
        _applied_quotas.clear()
        _applied_quotas.update({code: DEFAULT_APPLIED_VCPUS for code in EC2_QUOTAS})
        _spot_prices.clear()
        _launch_requests.clear()
        _placement_groups.clear()
        _placement_groups_served[0] = False
        _console_withheld[0] = 0
        _console_requests.clear()
        _launch_faults.clear()
        _start_faults.clear()
        _placement_scores.clear()
        _denied.clear()

    def set_quota(self, name: str, value: float) -> None:
        """Applied value of an EC2 quota, by name (e.g. a new account's 0 GPU vCPUs)."""
        code = next(code for code, quota_name in EC2_QUOTAS.items() if quota_name == name)
        _applied_quotas[code] = float(value)

    def set_spot_prices(self, region: str, prices: dict[tuple[str, str], float]) -> None:
        """Current spot prices, {(instance type, zone): USD/hour}. A type seeded here is priced only in
        the zones given (and dated now); types not seeded keep moto's placeholder."""
        _spot_prices.setdefault(region, {}).update({key: float(value) for key, value in prices.items()})

    def launch_requests(self) -> list[dict[str, str]]:
        """The RunInstances calls since the last reset, their query parameters flattened."""
        return [dict(request) for request in _launch_requests]

    def fail_launches(self, code: str, message: str = "", *, region: str | None = None, zone: str | None = None,
                      instance_type: str | None = None, market: str | None = None,
                      times: int | None = None, after: int = 0) -> None:
        """RunInstances refuses with EC2 error `code` where region, zone, type and market ("spot" or
        "on-demand") match (None: any), `times` times (None: always), once `after` matching launches went
        through. A launch without a zone lands in moto's default zone (REGIONa), which is what `zone` is
        matched against then."""
        _launch_faults.append({"code": code, "message": message or f"injected {code}", "region": region,
                               "zone": zone, "instance_type": instance_type, "market": market, "times": times,
                               "after": after})

    def fail_starts(self, code: str, message: str = "", *, zone: str | None = None, times: int | None = None) -> None:
        """StartInstances refuses with `code` for instances in `zone` (None: any), `times` times (None: always)."""
        _start_faults.append({"code": code, "message": message or f"injected {code}", "zone": zone, "times": times})

    def deny(self, operation: str) -> None:
        """Refuse `operation` (only DescribeVolumes so far) with UnauthorizedOperation, as EC2 does for an
        identity whose IAM policy lacks it."""
        assert operation in _DENIABLE, operation
        _denied.add(operation)

    def allow(self, operation: str) -> None:
        _denied.discard(operation)

    def set_spot_placement_scores(self, region: str, scores: dict[str, int]) -> None:
        """GetSpotPlacementScores answers these scores (1-10) per zone name of `region`."""
        _placement_scores.setdefault(region, {}).update(scores)

    def serve_placement_groups(self) -> None:
        """Answer Create/Describe/DeletePlacementGroups as EC2 does (until the next reset), instead of
        moto's HTTP 500; RunInstances then refuses an unknown Placement.GroupName."""
        _placement_groups_served[0] = True

    def placement_groups(self, region: str = "us-east-1") -> dict[str, dict]:
        """The placement groups that exist now, by name."""
        return {name: dict(group) for name, group in _placement_groups.get(region, {}).items()}

    def withhold_host_keys(self, reads: int | None) -> None:
        """Each instance's console shows no host key fingerprints for its first `reads` reads (None: ever)."""
        _console_withheld[0] = reads

    def console_requests(self) -> list[dict[str, str]]:
        """The GetConsoleOutput calls since the last reset: {"InstanceId": ..., "Latest": True or None}."""
        return [dict(request) for request in _console_requests]

    def stop(self) -> None:
        self.server.stop()


def print_host_keys_at_boot(fingerprints: list[str]) -> None:
    """The fingerprints every instance's console lists (all the loopback hosts': any may become it)."""
    _boot_fingerprints[:] = fingerprints


def extend_moto() -> None:
    """Offerings for the types moto lacks, and EC2 quotas in Service Quotas (in-process backend)."""
    from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS
    from moto.servicequotas import models, responses

    for region in REGIONS:
        zone_rows = INSTANCE_TYPE_OFFERINGS["availability-zone"][region]
        zones = sorted({row["Location"] for row in zone_rows})
        known = {(row["InstanceType"], row["Location"]) for row in zone_rows}
        for instance_type in EXTRA_OFFERED_TYPES:
            for zone in zones:
                if (instance_type, zone) not in known:
                    zone_rows.append({"InstanceType": instance_type, "Location": zone, "LocationType": "availability-zone"})
            region_rows = INSTANCE_TYPE_OFFERINGS["region"][region]
            if not any(row["InstanceType"] == instance_type for row in region_rows):
                region_rows.append({"InstanceType": instance_type, "Location": region, "LocationType": "region"})

    def quotas(region: str, values: dict[str, float]) -> list[dict]:
        return [{
            "ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaArn": f"arn:aws:servicequotas:{region}:{ACCOUNT_ID}:ec2/{code}", "QuotaCode": code,
            "QuotaName": name, "Value": values.get(code, 0.0), "Unit": "None", "Adjustable": True,
            "GlobalQuota": False,
        } for code, name in EC2_QUOTAS.items()]

    original_defaults = models.ServiceQuotasBackend.list_aws_default_service_quotas

    def list_aws_default_service_quotas(self, service_code: str) -> list[dict]:
        if service_code == "ec2":
            return quotas(self.region_name, {})  # a new account: 0 vCPUs of every kind
        return original_defaults(self, service_code)

    def list_service_quotas_backend(self, service_code: str) -> list[dict]:
        return quotas(self.region_name, _applied_quotas) if service_code == "ec2" else []

    def list_service_quotas_response(self) -> str:
        params = json.loads(self.body)
        return json.dumps({"Quotas": self.backend.list_service_quotas(str(params.get("ServiceCode")))})

    models.ServiceQuotasBackend.list_aws_default_service_quotas = list_aws_default_service_quotas
    models.ServiceQuotasBackend.list_service_quotas = list_service_quotas_backend
    responses.ServiceQuotasResponse.list_service_quotas = list_service_quotas_response
    _serve_seeded_spot_prices()
    _inject_launch_faults()  # inside the recorder: refused launches are recorded too
    _spot_placement_scores()
    _inject_start_faults()
    _inject_denials()
    _image_snapshot_tags()
    _record_launch_requests()
    _placement_group_api()
    _boot_console()
    _expected_bucket_owner()


def _expected_bucket_owner() -> None:
    """S3 refuses a request whose x-amz-expected-bucket-owner is not the bucket's account (AccessDenied, as
    S3 does); moto ignores the header. Buckets of other accounts are reachable across accounts in moto."""
    from moto.s3.exceptions import S3AccessDeniedError
    from moto.s3.responses import S3Response

    if getattr(S3Response, "awsrun_expected_owner", False):
        return

    def checked(original):
        def response(self, request, full_url):
            expected = request.headers.get("x-amz-expected-bucket-owner")
            name = self.parse_bucket_name_from_url(request, full_url)
            if expected and name:
                try:
                    bucket = self.backend.get_bucket(name)
                except Exception:  # noqa: BLE001 -- no such bucket: moto's own answer follows
                    bucket = None
                if bucket is not None and bucket.account_id != expected:
                    raise S3AccessDeniedError()
            return original(self, request, full_url)
        return response

    S3Response._bucket_response = checked(S3Response._bucket_response)
    S3Response._key_response = checked(S3Response._key_response)
    S3Response.awsrun_expected_owner = True


def _boot_console() -> None:
    """GetConsoleOutput with cloud-init's fingerprint block (moto's own sample has none), and recorded."""
    from moto.ec2.responses.general import SAMPLE_CONSOLE_OUTPUT, General
    from moto.ec2.utils import Base64EncodedString

    original = General.get_console_output
    if getattr(original, "awsrun_console", False):
        return

    def get_console_output(self):
        result = original(self)
        instance_id = self._get_param("InstanceId")
        _console_requests.append({"InstanceId": instance_id, "Latest": self._get_param("Latest")})
        reads = sum(1 for request in _console_requests if request["InstanceId"] == instance_id)
        withheld = _console_withheld[0]
        if _boot_fingerprints and withheld is not None and reads > withheld:
            block = "".join(f"256 {print_} root@ip-10-0-0-1 (ED25519)\n" for print_ in _boot_fingerprints)
            text = (f"{SAMPLE_CONSOLE_OUTPUT}ci-info: no authorized SSH keys fingerprints found for user ubuntu.\n"
                    f"-----BEGIN SSH HOST KEY FINGERPRINTS-----\n{block}-----END SSH HOST KEY FINGERPRINTS-----\n")
            result.result["Output"] = Base64EncodedString.from_raw_string(text)
        return result

    get_console_output.awsrun_console = True
    General.get_console_output = get_console_output


def _inject_launch_faults() -> None:
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses.instances import InstanceResponse

    original = InstanceResponse.run_instances
    if getattr(original, "awsrun_faults", False):
        return

    def run_instances(self):
        where = {"region": self.region, "zone": self._get_param("Placement.AvailabilityZone") or f"{self.region}a",
                 "instance_type": self._get_param("InstanceType"),
                 "market": "spot" if self._get_param("InstanceMarketOptions.MarketType") == "spot" else "on-demand"}
        for rule in _launch_faults:
            if rule["times"] == 0 or any(rule[k] is not None and rule[k] != v for k, v in where.items()):
                continue
            if rule["after"] > 0:
                rule["after"] -= 1
                continue
            if rule["times"] is not None:
                rule["times"] -= 1
            raise EC2ClientError(rule["code"], rule["message"])
        return original(self)

    run_instances.awsrun_faults = True
    InstanceResponse.run_instances = run_instances


_DENIABLE = {"DescribeVolumes": ("moto.ec2.responses.elastic_block_store", "ElasticBlockStore", "describe_volumes")}


def _inject_denials() -> None:
    import importlib

    from moto.ec2.exceptions import EC2ClientError

    for operation, (module, cls_name, method) in _DENIABLE.items():
        cls = getattr(importlib.import_module(module), cls_name)
        original = getattr(cls, method)
        if getattr(original, "awsrun_faults", False):
            continue

        def refused(self, _original=original, _operation=operation):
            if _operation in _denied:
                raise EC2ClientError("UnauthorizedOperation",
                                     "You are not authorized to perform this operation.")
            return _original(self)

        refused.awsrun_faults = True
        setattr(cls, method, refused)


def _inject_start_faults() -> None:
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses.instances import InstanceResponse

    original = InstanceResponse.start_instances
    if getattr(original, "awsrun_faults", False):
        return

    def start_instances(self):
        zones = {self.ec2_backend.get_instance(i)._placement.zone for i in self._get_param("InstanceIds", [])}
        for rule in _start_faults:
            if rule["times"] == 0 or (rule["zone"] is not None and rule["zone"] not in zones):
                continue
            if rule["times"] is not None:
                rule["times"] -= 1
            raise EC2ClientError(rule["code"], rule["message"])
        return original(self)

    start_instances.awsrun_faults = True
    InstanceResponse.start_instances = start_instances


def _image_snapshot_tags() -> None:
    """CreateImage with TagSpecifications for "snapshot" tags the image's snapshot, as EC2 does (moto raises)."""
    from moto.ec2.models.amis import AmiBackend

    original = AmiBackend.create_image
    if getattr(original, "awsrun_tags", False):
        return

    def create_image(self, instance_id, name, description, tag_specifications):
        snapshot_tags = [t for spec in tag_specifications if spec["ResourceType"] == "snapshot" for t in spec["Tags"]]
        others = [spec for spec in tag_specifications if spec["ResourceType"] != "snapshot"]
        image = original(self, instance_id, name, description, others)
        for tag in snapshot_tags:
            image.ebs_snapshot.add_tag(tag["Key"], tag["Value"])
        return image

    create_image.awsrun_tags = True
    AmiBackend.create_image = create_image


def _spot_placement_scores() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response

    def get_spot_placement_scores(self):
        scores = _placement_scores.get(self.region)
        if not scores:
            raise EC2ClientError("UnauthorizedOperation", "You are not authorized to perform this operation.")
        ids = {zone.name: zone.zone_id for zone in self.ec2_backend.describe_availability_zones()}
        return ActionResult({"SpotPlacementScores": [
            {"Region": self.region, "AvailabilityZoneId": ids[name], "Score": score}
            for name, score in scores.items()]})

    EC2Response.get_spot_placement_scores = get_spot_placement_scores


def _record_launch_requests() -> None:
    from moto.ec2.responses.instances import InstanceResponse

    original = InstanceResponse.run_instances
    if getattr(original, "awsrun_recorded", False):
        return

    def run_instances(self):
        _launch_requests.append({key: values[0] for key, values in self.querystring.items() if values})
        return original(self)

    run_instances.awsrun_recorded = True
    InstanceResponse.run_instances = run_instances


def _placement_group_api() -> None:
    """CreatePlacementGroup, DescribePlacementGroups and DeletePlacementGroup on moto's EC2 responses, active
    only while `serve_placement_groups` is on: otherwise they raise NotImplementedError, which moto's server
    answers with HTTP 500 exactly as for an action it lacks. A group in use by an instance that is not
    terminated cannot be deleted (InvalidPlacementGroup.InUse), as on EC2."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response
    from moto.ec2.responses.instances import InstanceResponse

    if getattr(EC2Response, "awsrun_placement_groups", False):
        return

    def served(self) -> dict[str, dict]:
        if not _placement_groups_served[0]:
            raise NotImplementedError(f"The {self._get_action()} action has not been implemented")
        return _placement_groups.setdefault(self.region, {})

    def create_placement_group(self):
        groups = served(self)
        name, strategy = self._get_param("GroupName"), self._get_param("Strategy")
        if name in groups:
            raise EC2ClientError("InvalidPlacementGroup.Duplicate", f"The Placement Group '{name}' already exists.")
        if strategy not in ("cluster", "spread", "partition"):
            raise EC2ClientError("InvalidParameterValue", f"Invalid value '{strategy}' for Strategy.")
        tags = self._parse_tag_specification("placement-group").get("placement-group", {})
        group = {"GroupName": name, "State": "available", "Strategy": strategy,
                 "GroupId": f"pg-{len(groups) + 1:017x}", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        groups[name] = group
        return ActionResult({"PlacementGroup": group})

    def describe_placement_groups(self):
        groups = served(self)
        names = self._get_param("GroupNames", [])
        unknown = [n for n in names if n not in groups]
        if unknown:
            raise EC2ClientError("InvalidPlacementGroup.Unknown", f"The Placement Group '{unknown[0]}' is unknown.")
        return ActionResult({"PlacementGroups": [g for n, g in groups.items() if not names or n in names]})

    def delete_placement_group(self):
        groups = served(self)
        name = self._get_param("GroupName")
        if name not in groups:
            raise EC2ClientError("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
        if _group_in_use(self, name):
            raise EC2ClientError("InvalidPlacementGroup.InUse", f"The Placement Group '{name}' is in use.")
        del groups[name]
        return ActionResult({})

    original_run = InstanceResponse.run_instances

    def run_instances(self):
        name = self._get_param("Placement.GroupName")
        if name and _placement_groups_served[0] and name not in _placement_groups.get(self.region, {}):
            raise EC2ClientError("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
        return original_run(self)

    run_instances.awsrun_recorded = getattr(original_run, "awsrun_recorded", False)
    InstanceResponse.run_instances = run_instances
    for method in (create_placement_group, describe_placement_groups, delete_placement_group):
        setattr(EC2Response, method.__name__, method)
    EC2Response.awsrun_placement_groups = True


def _group_in_use(response, name: str) -> bool:
    """Whether an instance launched into group `name` is still there (not terminated). Moto keeps no
    placement in its instances, so the group is read from the recorded RunInstances parameters."""
    tokens = {r.get("ClientToken") for r in _launch_requests if r.get("Placement.GroupName") == name}
    for reservation in response.ec2_backend.reservations.values():
        for instance in reservation.instances:
            if instance.state != "terminated" and getattr(instance, "client_token", None) in tokens:
                return True
    return False


def _serve_seeded_spot_prices() -> None:
    """DescribeSpotPriceHistory answers the prices `set_spot_prices` seeded (in-process backend)."""
    from datetime import datetime, timezone

    from moto.ec2.responses.spot_instances import SpotInstances

    original = SpotInstances.describe_spot_price_history
    if getattr(original, "awsrun_seeded", False):
        return

    def describe_spot_price_history(self):
        result = original(self)
        seeded = _spot_prices.get(self.region)
        if not seeded:
            return result
        seeded_types = {instance_type for instance_type, _ in seeded}
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        history = []
        for entry in result.result["SpotPriceHistory"]:
            key = (entry["InstanceType"], entry["AvailabilityZone"])
            if key in seeded:
                history.append({**entry, "SpotPrice": f"{seeded[key]:.6f}", "Timestamp": now})
            elif entry["InstanceType"] not in seeded_types:
                history.append(entry)
        result.result["SpotPriceHistory"] = history
        return result

    describe_spot_price_history.awsrun_seeded = True
    SpotInstances.describe_spot_price_history = describe_spot_price_history


def seed_public_parameters() -> None:
    from moto.ssm.models import Parameter, ssm_backends

    for region in REGIONS:
        backend = ssm_backends[ACCOUNT_ID][region]
        for name, value in PUBLIC_PARAMETERS.items():
            backend._parameters[name].append(
                Parameter(
                    account_id=ACCOUNT_ID, name=name, value=value, parameter_type="String",
                    description=None, allowed_pattern=None, keyid=None,
                    last_modified_date=0.0, version=1, data_type="aws:ec2:image",
                )
            )


def amis_path() -> str:
    return str(DATA / "amis.json")


def image_ids() -> list[str]:
    return [image["ami_id"] for image in json.loads((DATA / "amis.json").read_text())]
