"""`up --dry-run` and `doctor`: the candidates `up` would try, in order, with the zones it would try in
each, the price per hour and the vCPU quota headroom. Read-only: nothing is created or launched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from awsrun.cluster import failover
from awsrun.errors import AwsrunError
from awsrun.settings import Settings
from awsrun.setup import catalog


@dataclass(frozen=True)
class PlanRow:
    region: str
    instance_type: str
    market: str
    zones: tuple[str | None, ...]      # in the order `up` tries them (None: EC2's choice)
    usd_per_hour: float | None         # spot: the cheapest zone now; on-demand: the catalog's list price
    quota_name: str | None
    quota_code: str | None
    headroom_vcpus: float | None       # quota - vCPUs in use; None when unknown
    needed_vcpus: int | None
    note: str = ""                     # why a row cannot launch, or why a number is missing

    @property
    def fits(self) -> bool | None:
        if self.headroom_vcpus is None or self.needed_vcpus is None:
            return None
        return self.headroom_vcpus >= self.needed_vcpus

    def as_dict(self) -> dict[str, Any]:
        return {"region": self.region, "instance_type": self.instance_type, "market": self.market,
                "zones": [z or "EC2's choice" for z in self.zones], "usd_per_hour": self.usd_per_hour,
                "quota_name": self.quota_name, "quota_code": self.quota_code,
                "headroom_vcpus": self.headroom_vcpus, "needed_vcpus": self.needed_vcpus, "fits": self.fits,
                "note": self.note}


def plan(settings: Settings, aws: Callable[[str | None], Any], count: int = 1) -> list[PlanRow]:
    """One row per candidate, in the order `up` tries them. `aws(region)` gives an AwsProvider."""
    from awsrun.account.quota import check_quota
    from awsrun.cluster.ec2 import launch_zones
    from awsrun.providers.aws_clients import AwsClients
    from awsrun.providers.aws_errors import QUOTA_CODES

    providers: dict[str | None, Any] = {}
    rows = []
    for candidate in failover.candidates(settings):
        if candidate.region not in providers:
            providers[candidate.region] = aws(candidate.region)
        provider = providers[candidate.region]
        kind, spot = candidate.instance_type, settings.spot
        market = "spot" if spot else "on-demand"
        try:
            offered = provider.zones_for(kind)
            zones = tuple(launch_zones(provider, kind, spot, settings.zone, offered))
            spot_prices = provider.spot_prices(kind) if spot else {}
        except AwsrunError as exc:
            rows.append(PlanRow(provider.region, kind, market, (), None, None, None, None, None, exc.message))
            continue
        notes = []
        if settings.zone and settings.zone not in offered:
            notes.append(f"not offered in {settings.zone}")
        price = min(spot_prices.values()) if spot_prices else catalog.on_demand_price(kind, provider.region)
        clients = AwsClients(provider.region, ec2=provider.ec2, quotas=provider.client("service-quotas"))
        check = check_quota(clients, kind, count, spot, provider.region)
        headroom = (check.quota.value - (check.usage or 0)) if check.quota is not None else None
        if check.problem:
            notes.append(check.problem)
        elif check.known and not check.ok:
            notes.append(f"quota short by {check.shortfall} vCPUs: `{check.request_command}`")
        rows.append(PlanRow(provider.region, kind, market, zones, price, check.quota_name,
                            QUOTA_CODES.get(check.quota_name or ""), headroom, check.needed, "; ".join(notes)))
    return rows
