"""GPU vCPU quotas: which Service Quotas quota governs an instance type and market, and how it compares with
what a launch needs. Filing an increase request: awsrun.account.quota_requests; the cached check `up` runs before a
launch: awsrun.account.launch_check.

A fresh AWS account may run 0 GPU vCPUs. EC2 limits running instances per *family* in vCPUs (on-demand
"Running On-Demand G and VT instances", spot "All G and VT Spot Instance Requests", ...). Quotas are found
by NAME (`awsrun.setup.catalog.quota_names`), never by a hard-coded L-... code: the codes are opaque and the
names are what the console and the docs show.

Nothing here prints or imports click; boto3 is imported only when a client is first made.
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any

from awsrun.errors import AwsrunError, CloudError, ConfigError
from awsrun.providers.aws_clients import AwsClients
from awsrun.providers.aws_errors import (
    DENIED_CODES,
    aws_error_code,
    botocore_errors,
    describe_aws_error,
)
from awsrun.setup import catalog

SERVICE_CODE = "ec2"
# Instance states that hold vCPU quota: a stopped instance holds none.
USING_STATES = ("pending", "running")


# --------------------------------------------------------------------------------------------- errors

class QuotaTooLow(CloudError):
    """The quota is known and the launch would exceed it."""


class QuotaUnknown(CloudError):
    """The governing quota could not be found or read."""


# ---------------------------------------------------------------------------------------- data types

@dataclass(frozen=True)
class Quota:
    """One Service Quotas quota. `source` is 'applied' (this account's value) or 'default' (AWS's)."""

    name: str
    code: str
    value: float
    source: str
    adjustable: bool = True


@dataclass(frozen=True)
class QuotaCheck:
    """The quota that governs `count` instances of `instance_type` on a market, against their vCPUs.

    `quota` is None when it could not be determined; `problem` and `fix` then say why and what to do.
    `usage` is the vCPUs already running in the same family and market, None when unknown.
    `region_flag` is set when the region differs from boto3's default, so commands shown carry --region.
    """

    instance_type: str
    spot: bool
    count: int
    region: str
    quota_name: str | None
    vcpus_per_instance: int | None
    quota: Quota | None = None
    usage: int | None = None
    usage_note: str | None = None
    problem: str | None = None
    fix: str | None = None
    region_flag: str | None = None

    @property
    def market(self) -> str:
        return "spot" if self.spot else "on-demand"

    @property
    def needed(self) -> int | None:
        return None if self.vcpus_per_instance is None else self.vcpus_per_instance * self.count

    @property
    def known(self) -> bool:
        return self.quota is not None and self.needed is not None

    @property
    def shortfall(self) -> int | None:
        """vCPUs missing for the launch (0 when it fits); None when the quota is unknown."""
        if not self.known:
            return None
        assert self.quota is not None and self.needed is not None
        return max(0, math.ceil((self.usage or 0) + self.needed - self.quota.value))

    @property
    def ok(self) -> bool:
        return self.known and self.shortfall == 0

    @property
    def request_command(self) -> str:
        return request_command(self.instance_type, self.count, self.spot, self.region_flag)

    def summary(self) -> str:
        """One line: the numbers, or why there are none."""
        what = f"{self.instance_type} x{self.count} ({self.market})"
        if self.quota is None or self.needed is None:
            return f"{what}: {self.problem or 'quota unknown'}"
        usage = (f"{self.usage} vCPUs in use" if self.usage is not None
                 else f"usage unknown ({self.usage_note})" if self.usage_note else "usage unknown")
        head = (f"{what} needs {self.needed} vCPUs; quota '{self.quota.name}' ({self.quota.code}) in "
                f"{self.region} is {fmt_number(self.quota.value)} vCPUs"
                f"{' (AWS default)' if self.quota.source == 'default' else ''}, {usage}")
        if self.ok:
            return f"{head}: enough"
        return f"{head}: short by {self.shortfall} vCPUs"


def fmt_number(value: float) -> str:
    """4.0 -> "4"; 4.5 -> "4.5"."""
    return str(int(value)) if float(value).is_integer() else str(value)


# ----------------------------------------------------------------------------------- pure builders

def request_command(instance_type: str, count: int, spot: bool, region: str | None = None) -> str:
    """The exact command that files the increase for this launch."""
    argv = ["awsrun", "quota", "request", "--instance-type", instance_type, "--count", str(count)]
    if spot:
        argv.append("--spot")
    if region:
        argv += ["--region", region]
    return shlex.join(argv)


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


# ------------------------------------------------------------------------------------ cloud reads

def vcpus_of(instance_type: str, ec2: Any | None = None) -> int | None:
    """Default vCPUs of a type: the catalog, else EC2's describe_instance_types, else None."""
    spec = catalog.lookup(instance_type)
    if spec is not None:
        return spec.vcpus
    if ec2 is None:
        return None
    return _describe_vcpus(ec2, [instance_type]).get(instance_type)


def _describe_vcpus(ec2: Any, types: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(types), 100):
        try:
            reply = ec2.describe_instance_types(InstanceTypes=types[start:start + 100])
        except botocore_errors():
            continue
        for item in reply.get("InstanceTypes", []):
            found[item["InstanceType"]] = int(item["VCpuInfo"]["DefaultVCpus"])
    return found


def find_quota(quotas: Any, name: str) -> Quota | None:
    """The ec2 quota named `name`: this account's applied value, else AWS's default; None if neither has it.

    list_service_quotas returns the applied values; a quota never changed may be missing there, and
    list_aws_default_service_quotas then has its default (Service Quotas API reference).
    """
    for operation, iam_action, source in (
        ("list_service_quotas", "servicequotas:ListServiceQuotas", "applied"),
        ("list_aws_default_service_quotas", "servicequotas:ListAWSDefaultServiceQuotas", "default"),
    ):
        try:
            for page in quotas.get_paginator(operation).paginate(ServiceCode=SERVICE_CODE):
                for item in page.get("Quotas", []):
                    if _same_name(item.get("QuotaName", ""), name):
                        return Quota(name=item["QuotaName"], code=item["QuotaCode"], value=float(item["Value"]),
                                     source=source, adjustable=bool(item.get("Adjustable", True)))
        except botocore_errors() as exc:
            if aws_error_code(exc) == "NoSuchResourceException":
                continue  # no quotas of this kind for ec2 in the region: try the next source
            raise describe_aws_error(exc, f"Service Quotas {_api(operation)}", iam_action) from None
    return None


def _api(operation: str) -> str:
    special = {"list_aws_default_service_quotas": "ListAWSDefaultServiceQuotas"}
    return special.get(operation) or "".join(part.capitalize() for part in operation.split("_"))


def vcpus_in_use(ec2: Any, instance_type: str, spot: bool) -> tuple[int | None, str]:
    """vCPUs of the pending/running instances in the same quota family and market, with a note.

    Counts each instance at its type's default vCPUs (vCPU quotas count the type, not CpuOptions).
    Returns (None, why) when EC2 does not say.
    """
    family = catalog.quota_family(instance_type)
    types: list[str] = []
    try:
        paginator = ec2.get_paginator("describe_instances")
        for page in paginator.paginate(Filters=[{"Name": "instance-state-name", "Values": list(USING_STATES)}]):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    is_spot = instance.get("InstanceLifecycle") == "spot"
                    if is_spot != spot:
                        continue
                    try:
                        if catalog.quota_family(instance["InstanceType"]) != family:
                            continue
                    except ValueError:
                        continue
                    types.append(instance["InstanceType"])
    except botocore_errors() as exc:
        code = aws_error_code(exc)
        return None, ("ec2:DescribeInstances denied" if code in DENIED_CODES
                      else f"describe_instances failed: {code or type(exc).__name__}")
    per_type = {t: vcpus_of(t) for t in set(types)}
    missing = sorted(t for t, v in per_type.items() if v is None)
    if missing:
        per_type.update(_describe_vcpus(ec2, missing))
    unknown = sorted(t for t in set(types) if per_type.get(t) is None)
    if unknown:
        return None, f"vCPUs of {', '.join(unknown)} unknown"
    total = sum(per_type[t] for t in types)  # type: ignore[misc]
    market = "spot" if spot else "on-demand"
    return total, f"{len(types)} running {market} {family} instance{'s' if len(types) != 1 else ''}"


def assess(clients: AwsClients, instance_type: str, count: int = 1, spot: bool = False,
           region_flag: str | None = None) -> QuotaCheck:
    """The quota check for a launch. Raises an AwsrunError (with the fix) when the quota cannot be read."""
    if count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}")
    try:
        name = catalog.quota_names(instance_type, spot)
    except ValueError as exc:
        raise QuotaUnknown(f"no vCPU quota known for {instance_type}: {exc}",
                           hint="check the instance type name (`aws ec2 describe-instance-types`)") from None
    vcpus = vcpus_of(instance_type, clients.ec2)
    if vcpus is None:
        raise QuotaUnknown(f"the vCPU count of {instance_type} is unknown (not in awsrun's catalog, and EC2 "
                           f"does not describe it in {clients.region})",
                           hint="check the instance type name and the region")
    quota = find_quota(clients.quotas, name)
    if quota is None:
        raise QuotaUnknown(f"no quota named '{name}' found in Service Quotas for ec2 in {clients.region}",
                           hint=f"look it up in the console: Service Quotas > Amazon EC2 > search '{name}'")
    usage, note = vcpus_in_use(clients.ec2, instance_type, spot)
    return QuotaCheck(instance_type=instance_type, spot=spot, count=count, region=clients.region,
                      quota_name=name, vcpus_per_instance=vcpus, quota=quota, usage=usage, usage_note=note,
                      region_flag=region_flag)


def check_quota(clients: AwsClients, instance_type: str, count: int = 1, spot: bool = False,
                region_flag: str | None = None) -> QuotaCheck:
    """Like `assess`, but a quota that cannot be read is recorded in the result (problem, fix)."""
    try:
        return assess(clients, instance_type, count, spot, region_flag)
    except AwsrunError as exc:
        error = exc
    try:
        name: str | None = catalog.quota_names(instance_type, spot)
    except ValueError:
        name = None
    spec = catalog.lookup(instance_type)
    fix = error.hint or (f"see the quota in the console: Service Quotas > Amazon EC2 > '{name}'" if name else None)
    return QuotaCheck(instance_type=instance_type, spot=spot, count=count, region=clients.region,
                      quota_name=name, vcpus_per_instance=spec.vcpus if spec else None,
                      problem=error.message, fix=fix, region_flag=region_flag)


def offered_zones(ec2: Any, instance_type: str) -> tuple[str, ...]:
    """The availability zones of the client's region that offer `instance_type` (empty: not offered)."""
    zones: set[str] = set()
    try:
        paginator = ec2.get_paginator("describe_instance_type_offerings")
        for page in paginator.paginate(LocationType="availability-zone",
                                       Filters=[{"Name": "instance-type", "Values": [instance_type]}]):
            zones.update(o["Location"] for o in page.get("InstanceTypeOfferings", []))
    except botocore_errors() as exc:
        raise describe_aws_error(exc, "EC2 DescribeInstanceTypeOfferings",
                                 "ec2:DescribeInstanceTypeOfferings") from None
    return tuple(sorted(zones))
