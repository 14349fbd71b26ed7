"""What GPU capacity costs: the hourly price of an instance (on-demand from the catalog, spot from EC2's
price history for its zone), what a session cost, and the table behind `awsrun prices`.

On-demand prices are the catalog's list prices (awsrun/data/catalog.json); spot prices are EC2's own
(DescribeSpotPriceHistory, the entry in effect now, per zone). A session's cost is an estimate: hours
since the instance last started times today's price (spot prices move; EC2 bills by the second).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from awsrun.errors import AwsrunError, ConfigError
from awsrun.setup import catalog
from awsrun.state import InstanceRecord

LIST_PRICE = "on-demand list price"
SPOT_PRICE = "spot price"
BILLED_STATES = ("pending", "running")  # what bills for compute; a stopped instance bills only its disk


class PriceBook:
    """USD/hour per instance for one command: one spot-price call per (region, type), then cached.

    `provider_for(region)` gives an AwsProvider; a spot price that cannot be read falls back to the
    list price, with the reason kept in `notes`."""

    def __init__(self, provider_for: Callable[[str | None], Any]):
        self.provider_for = provider_for
        self._spot: dict[tuple[str | None, str], dict[str, float]] = {}
        self.notes: list[str] = []

    def spot(self, region: str | None, instance_type: str) -> dict[str, float]:
        key = (region, instance_type)
        if key not in self._spot:
            try:
                self._spot[key] = self.provider_for(region).spot_prices(instance_type)
            except AwsrunError as exc:
                self.notes.append(f"no spot price for {instance_type} in {region}: {exc.message}")
                self._spot[key] = {}
        return self._spot[key]

    def hourly(self, region: str | None, instance_type: str | None, market: str | None,
               zone: str | None) -> tuple[float | None, str | None]:
        """(USD/hour, where it comes from); (None, None) when nothing is known."""
        if not instance_type:
            return None, None
        if market == "spot":
            price = self.spot(region, instance_type).get(zone or "")
            if price is not None:
                return price, SPOT_PRICE
        listed = catalog.on_demand_price(instance_type, region or "")
        if listed is None:
            return None, None
        return listed, LIST_PRICE + (" (upper bound for spot)" if market == "spot" else "")


@dataclass(frozen=True)
class SessionCost:
    """What one instance's current session (since it last started) has cost, at today's price."""

    instance_id: str
    instance_type: str | None
    market: str | None
    seconds: float
    hourly_usd: float | None
    price_source: str | None
    cost_usd: float | None


def session_costs(records: Iterable[InstanceRecord], region: str | None, book: PriceBook,
                  now: float | None = None) -> tuple[SessionCost, ...]:
    """The cost of every billing instance's session so far (EC2's LaunchTime is its last start)."""
    now = time.time() if now is None else now
    costs = []
    for record in records:
        if record.state not in BILLED_STATES or not record.launched_at:
            continue
        seconds = max(0.0, now - record.launched_at)
        hourly, source = book.hourly(region, record.instance_type, record.market, record.zone)
        cost = round(seconds / 3600 * hourly, 4) if hourly is not None else None
        costs.append(SessionCost(record.id, record.instance_type, record.market, seconds, hourly, source, cost))
    return tuple(costs)


def total(costs: Iterable[SessionCost]) -> float | None:
    known = [c.cost_usd for c in costs if c.cost_usd is not None]
    return round(sum(known), 4) if known else None


# `awsrun prices` -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TypePrices:
    instance_type: str
    gpu_model: str
    gpu_count: int
    gpu_memory_gib: int
    on_demand_usd: float | None
    spot_usd: dict[str, float] = field(default_factory=dict)   # zone -> USD/hour, cheapest first

    @property
    def cheapest_zone(self) -> str | None:
        return next(iter(self.spot_usd), None)

    @property
    def spot_min_usd(self) -> float | None:
        return self.spot_usd[self.cheapest_zone] if self.spot_usd else None

    def per_gpu(self, usd: float | None) -> float | None:
        return round(usd / self.gpu_count, 6) if usd is not None and self.gpu_count else None

    @property
    def best_usd_per_gpu(self) -> float | None:
        known = [p for p in (self.per_gpu(self.spot_min_usd), self.per_gpu(self.on_demand_usd)) if p is not None]
        return min(known) if known else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # a list, cheapest first: JSON objects carry no order (and `--json` sorts keys)
        data["spot_usd"] = [{"zone": zone, "usd": usd} for zone, usd in self.spot_usd.items()]
        data.update(cheapest_zone=self.cheapest_zone, spot_min_usd=self.spot_min_usd,
                    on_demand_usd_per_gpu=self.per_gpu(self.on_demand_usd),
                    spot_usd_per_gpu=self.per_gpu(self.spot_min_usd),
                    spot_saving=round(1 - self.spot_min_usd / self.on_demand_usd, 4)
                    if self.spot_min_usd is not None and self.on_demand_usd else None)
        return data


@dataclass(frozen=True)
class PriceTable:
    region: str
    rows: tuple[TypePrices, ...]
    prices_as_of: str       # the catalog's list prices
    notes: tuple[str, ...] = ()
    prices_origin: str = ""  # where the list prices come from (the catalog's prices_origin)
    live_spot: bool = True   # False: EC2 could not be asked (no credentials, offline): list prices only

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "on_demand_prices_as_of": self.prices_as_of,
                "on_demand_prices_origin": self.prices_origin, "live_spot_prices": self.live_spot,
                "types": [row.as_dict() for row in self.rows], "notes": list(self.notes)}


def gpu_models() -> list[str]:
    return sorted({catalog.lookup(t).gpu_model or "" for t in catalog.gpu_types()} - {""})


def catalog_types(gpu: str | None) -> list[str]:
    """The catalog's GPU types, or those with GPU model `gpu` (case-insensitive)."""
    types = catalog.gpu_types()
    if gpu is None:
        return types
    wanted = gpu.strip().casefold()
    chosen = [t for t in types if (catalog.lookup(t).gpu_model or "").casefold() == wanted]
    if not chosen:
        raise ConfigError(f"no GPU model {gpu!r} in awsrun's catalog", hint=f"known: {', '.join(gpu_models())}")
    return chosen


def price_table(provider, gpu: str | None = None) -> PriceTable:
    """Catalog GPU types in the provider's region: on-demand list price and current spot price per
    zone, cheapest $/GPU-hour first (spot where EC2 publishes it)."""
    types = catalog_types(gpu)
    spot = provider.spot_price_table(types)
    rows = []
    for name in types:
        spec = catalog.lookup(name)
        zones = spot.get(name, {})
        rows.append(TypePrices(name, spec.gpu_model or "", spec.gpu_count, spec.gpu_memory_gib,
                               spec.price(provider.region),
                               dict(sorted(zones.items(), key=lambda item: (item[1], item[0])))))
    rows.sort(key=lambda r: (r.best_usd_per_gpu if r.best_usd_per_gpu is not None else math.inf, r.instance_type))
    notes = []
    if provider.region not in catalog.load_catalog().regions:
        notes.append(f"the catalog has no on-demand list prices for {provider.region}")
    missing = [r.instance_type for r in rows if not r.spot_usd]
    if missing:
        notes.append(f"no spot price published in {provider.region} for {', '.join(missing)}")
    book = catalog.load_catalog()
    return PriceTable(provider.region, tuple(rows), book.prices_as_of, tuple(notes), book.prices_origin)


DEFAULT_REGION = "us-east-1"  # whose list prices `prices` shows when no region is set at all


def list_price_table(region: str, gpu: str | None, why_no_spot: str) -> PriceTable:
    """The catalog's on-demand list prices alone, for when EC2 cannot be asked for spot prices."""
    book = catalog.load_catalog()
    rows = [TypePrices(name, spec.gpu_model or "", spec.gpu_count, spec.gpu_memory_gib, spec.price(region))
            for name in catalog_types(gpu) for spec in [catalog.lookup(name)]]
    rows.sort(key=lambda r: (r.best_usd_per_gpu if r.best_usd_per_gpu is not None else math.inf, r.instance_type))
    notes = [f"no spot prices: live spot prices need AWS credentials and a connection to EC2 ({why_no_spot})"]
    if region not in book.regions:
        notes.append(f"the catalog has no on-demand list prices for {region} (it has {', '.join(book.regions)})")
    return PriceTable(region, tuple(rows), book.prices_as_of, tuple(notes), book.prices_origin, live_spot=False)


def prices_for(region: str | None, gpu: str | None, provider_for: Callable[[str | None], Any]) -> PriceTable:
    """`awsrun prices`: list and live spot prices; without credentials, a region or a network, the
    list prices shipped in the catalog, saying why spot prices are missing."""
    catalog_types(gpu)  # an unknown model fails before AWS is asked
    try:
        return price_table(provider_for(region), gpu)
    except AwsrunError as exc:
        shown = region or _chain_region()
        table = list_price_table(shown or DEFAULT_REGION, gpu, exc.message)
        if shown is None:
            table = dataclasses.replace(table, notes=table.notes + (
                f"no AWS region set: list prices for {DEFAULT_REGION} (--region R for another)",))
        return table


def _chain_region() -> str | None:
    from awsrun.providers.aws_clients import chain_region

    try:
        return chain_region() or None  # an empty AWS_DEFAULT_REGION reads as ''
    except AwsrunError:
        return None


def cheapest_zones(spot: dict[str, float], offered: Iterable[str] | None) -> list[str]:
    """Zones to try for a spot launch, cheapest first: those with a price (and, when known, offering
    the type), then offering zones without a published price."""
    offered_set = set(offered) if offered is not None else None
    priced = sorted((z for z in spot if offered_set is None or z in offered_set), key=lambda z: (spot[z], z))
    rest = sorted(offered_set - set(priced)) if offered_set is not None else []
    return priced + rest
