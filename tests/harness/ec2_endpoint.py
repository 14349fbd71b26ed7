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

    def stop(self) -> None:
        self.server.stop()


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
    _record_launch_requests()


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
