"""GPU vCPU quotas: which Service Quotas quota governs an instance type and market, how it compares with
what a launch needs, increase requests and their history, and the cached pre-launch check `up` calls.

A fresh AWS account may run 0 GPU vCPUs. EC2 limits running instances per *family* in vCPUs (on-demand
"Running On-Demand G and VT instances", spot "All G and VT Spot Instance Requests", ...). Quotas are found
by NAME (`awsrun.catalog.quota_names`), never by a hard-coded L-... code: the codes are opaque and the
names are what the console and the docs show.

Nothing here prints or imports click; boto3 is imported only when a client is first made.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from awsrun import catalog
from awsrun.errors import AwsrunError, CloudError, ConfigError
from awsrun.home import Home
from awsrun.providers.aws_clients import AwsClients, chain_region, resolve_region
from awsrun.providers.aws_errors import (  # noqa: F401 (TypeNotOffered is raised here, and re-exported)
    DENIED_CODES, TypeNotOffered, aws_error_code, aws_message, botocore_errors, describe_aws_error)

SERVICE_CODE = "ec2"
# Instance states that hold vCPU quota: a stopped instance holds none.
USING_STATES = ("pending", "running")
DEFAULT_MAX_AGE_S = 600.0



# --------------------------------------------------------------------------------------------- errors

class QuotaTooLow(CloudError):
    """The quota is known and the launch would exceed it."""


class QuotaUnknown(CloudError):
    """The governing quota could not be found or read."""


class NothingToRequest(AwsrunError):
    """The quota already covers the launch: no increase to file."""

    exit_code = 0


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


@dataclass(frozen=True)
class QuotaRequest:
    """One quota increase request, as Service Quotas reports it."""

    id: str
    quota_name: str
    quota_code: str
    desired: float
    status: str
    created: str | None = None
    last_updated: str | None = None
    case_id: str | None = None
    region: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LaunchCheck:
    """What `check_launch_quota` found: the zones offering the type and the quota check."""

    region: str
    zones: tuple[str, ...]
    quota: QuotaCheck
    cached: bool = False
    warnings: tuple[str, ...] = field(default=())


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


def desired_value(check: QuotaCheck) -> int:
    """What to ask for: max(current value, vCPUs in use + vCPUs needed). Unknown usage counts as 0."""
    if check.quota is None or check.needed is None:
        raise ValueError("desired_value needs a known quota and vCPU count")
    return max(math.ceil(check.quota.value), (check.usage or 0) + check.needed)


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


# ------------------------------------------------------------------------------- requests (writes)

def request_increase(clients: AwsClients, check: QuotaCheck) -> QuotaRequest:
    """File request_service_quota_increase for the check's quota, asking for `desired_value(check)`."""
    if check.quota is None:
        raise QuotaUnknown(check.problem or "quota unknown", hint=check.fix)
    if check.ok:
        raise NothingToRequest(f"nothing to request: {check.summary()}")
    desired = desired_value(check)
    try:
        reply = clients.quotas.request_service_quota_increase(
            ServiceCode=SERVICE_CODE, QuotaCode=check.quota.code, DesiredValue=float(desired))
    except botocore_errors() as exc:
        code = aws_error_code(exc)  # None for a BotoCoreError (no answer from AWS): described below
        if code == "ResourceAlreadyExistsException":
            raise CloudError(f"a request to raise '{check.quota.name}' is already open in {check.region}",
                             hint="`awsrun quota status` shows it; wait for it to be decided") from None
        if code == "QuotaExceededException":
            raise CloudError(f"too many open quota requests in {check.region}: {aws_message(exc)}",
                             hint="`awsrun quota status` lists them; wait for some to close") from None
        if code in ("IllegalArgumentException", "InvalidResourceStateException"):
            raise CloudError(f"Service Quotas refused the request ({code}): {aws_message(exc)}",
                             hint="raise it in the console (Service Quotas > Amazon EC2) or open a support "
                                  "case") from None
        raise describe_aws_error(exc, "Service Quotas RequestServiceQuotaIncrease",
                                 "servicequotas:RequestServiceQuotaIncrease") from None
    return _request_from(reply["RequestedQuota"], check.region)


def request_status(clients: AwsClients, quota_code: str | None = None) -> list[QuotaRequest]:
    """Pending and past ec2 quota increase requests (of one quota when `quota_code` is given), newest first."""
    if quota_code:
        operation, kwargs = ("list_requested_service_quota_change_history_by_quota",
                             {"ServiceCode": SERVICE_CODE, "QuotaCode": quota_code})
        api = "ListRequestedServiceQuotaChangeHistoryByQuota"
    else:
        operation, kwargs = "list_requested_service_quota_change_history", {"ServiceCode": SERVICE_CODE}
        api = "ListRequestedServiceQuotaChangeHistory"
    requests: list[QuotaRequest] = []
    try:
        for page in clients.quotas.get_paginator(operation).paginate(**kwargs):
            requests.extend(_request_from(item, clients.region) for item in page.get("RequestedQuotas", []))
    except botocore_errors() as exc:
        raise describe_aws_error(exc, f"Service Quotas {api}", f"servicequotas:{api}") from None
    return sorted(requests, key=lambda r: r.created or "", reverse=True)


def _when(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _request_from(item: dict[str, Any], region: str) -> QuotaRequest:
    return QuotaRequest(
        id=item.get("Id", ""), quota_name=item.get("QuotaName", ""), quota_code=item.get("QuotaCode", ""),
        desired=float(item.get("DesiredValue", 0)), status=item.get("Status", "UNKNOWN"),
        created=_when(item.get("Created")), last_updated=_when(item.get("LastUpdated")),
        case_id=item.get("CaseId") or None, region=region,
    )


# ---------------------------------------------------------------------------- pre-launch check + cache

def _cache_path(home: Home) -> Path:
    return home.root / "cache" / "preflight.json"


def _cache_key(region: str, instance_type: str, spot: bool, count: int) -> str:
    return f"{region}|{instance_type}|{'spot' if spot else 'on-demand'}|{count}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next call a few API requests


def _fresh(entry: Any, now: float, max_age_s: float) -> bool:
    """A cache entry written at most `max_age_s` ago (and not in the future: a clock set back)."""
    try:
        return isinstance(entry, dict) and 0 <= now - float(entry["at"]) <= max_age_s
    except (KeyError, TypeError, ValueError):
        return False


def _check_from(raw: dict[str, Any]) -> QuotaCheck:
    raw = dict(raw)
    quota = raw.pop("quota", None)
    return QuotaCheck(**raw, quota=Quota(**quota) if quota else None)


def check_launch_quota(
    instance_type: str,
    *,
    home: Home,
    count: int = 1,
    spot: bool = False,
    region: str | None = None,
    zone: str | None = None,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    clients: AwsClients | None = None,
    clock: Callable[[], float] = time.time,
) -> LaunchCheck:
    """The pre-launch check `up` runs: the type is offered (in `zone` when given) and the quota covers it.

    Raises TypeNotOffered, or QuotaTooLow (message: the shortfall; hint: the exact `awsrun quota request`
    command). A quota that cannot be read (no permission, unknown) does not block: it comes back in
    `LaunchCheck.warnings` and the launch itself is the judge. A passing result is cached in
    AWSRUN_HOME/cache/preflight.json for `max_age_s`; a refusal is never made from the cache.
    """
    chain = chain_region()
    region_name = resolve_region(region or chain)
    region_flag = region if region and region != chain else None
    path = _cache_path(home)
    key = _cache_key(region_name, instance_type, spot, count)
    now = clock()
    cache = {k: v for k, v in _read_cache(path).items() if _fresh(v, now, max_age_s)}
    entry = cache.get(key)
    if entry is not None:
        try:
            zones = tuple(entry["zones"])
            check = _check_from(entry["check"])
            if check.ok and (zone is None or zone in zones):
                return LaunchCheck(region=region_name, zones=zones, quota=check, cached=True)
        except (KeyError, TypeError, ValueError):
            pass
    clients = clients or AwsClients(region_name)
    zones = offered_zones(clients.ec2, instance_type)
    if not zones:
        raise TypeNotOffered(f"{instance_type} is not offered in {region_name}",
                             hint="pick another region (--region) or type; `awsrun doctor --instance-type "
                                  f"{instance_type} --region R` checks one")
    if zone is not None and zone not in zones:
        raise TypeNotOffered(f"{instance_type} is not offered in zone {zone}",
                             hint=f"offered in {', '.join(zones)}: pass one of them to --zone, or leave --zone out")
    check = check_quota(clients, instance_type, count, spot, region_flag)
    if check.known and not check.ok:
        raise QuotaTooLow(check.summary(),
                          hint=f"request the increase with `{check.request_command}` "
                               "(approval takes minutes to a day; `awsrun quota status` follows it)")
    warnings: tuple[str, ...] = ()
    if not check.known:
        warnings = (f"could not check the vCPU quota: {check.problem}",)
    else:
        cache[key] = {"at": now, "zones": list(zones), "check": asdict(check)}
        _write_cache(path, cache)
    return LaunchCheck(region=region_name, zones=zones, quota=check, warnings=warnings)

