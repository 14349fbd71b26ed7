"""The check `up` runs before it launches anything: the instance type is offered in the region (and zone),
and its GPU vCPU quota covers the launch. A passing answer is cached for minutes in
AWSRUN_HOME/cache/preflight.json; a refusal is never made from the cache.

Nothing here prints or imports click; boto3 is imported only when a client is first made.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from awsrun.account.quota import (
    Quota,
    QuotaCheck,
    QuotaTooLow,
    check_quota,
    offered_zones,
)
from awsrun.home import Home
from awsrun.providers.aws_clients import AwsClients, chain_region, resolve_region
from awsrun.providers.aws_errors import TypeNotOffered

DEFAULT_MAX_AGE_S = 600.0


@dataclass(frozen=True)
class LaunchCheck:
    """What `check_launch_quota` found: the zones offering the type and the quota check."""

    region: str
    zones: tuple[str, ...]
    quota: QuotaCheck
    cached: bool = False
    warnings: tuple[str, ...] = field(default=())


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
