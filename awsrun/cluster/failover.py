"""Where `up` looks for a GPU when EC2 says no: the candidates in order, EC2's refusals sorted, and what
was tried.

Candidates are (region, instance type) pairs: the regions in the order given (`--region a,b`, setting
`regions`), and in each region the types in the order given (`--instance-type x,y`), then the catalog's
types with the `--gpu` model, cheapest first. Inside a candidate `aws_cluster.launch_node` tries each zone
once (cheapest spot zone first). EC2's answers are sorted, never retried blindly:

- no capacity (InsufficientInstanceCapacity, a zone without the type): the next zone, then the next candidate;
- a quota (VcpuLimitExceeded, MaxSpotInstanceCountExceeded, a Service Quotas shortfall found before the
  launch): every later candidate of that region, quota family and market is skipped, and the end says
  which `awsrun quota request` lifts it;
- anything else (a bad parameter, a permission, credentials): raised at once.

Plain functions: no printing, no click; the rounds of `--retry-until-up` sleep through an injected clock.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from awsrun.account.quota import QuotaTooLow, request_command
from awsrun.errors import AwsrunError, CloudError
from awsrun.progress import Reporter
from awsrun.providers.aws_errors import (
    QUOTA_CODES,
    CapacityError,
    QuotaError,
    TypeNotOffered,
)
from awsrun.settings import Settings, split_list
from awsrun.setup import catalog

MAX_BACKOFF_S = 600.0
ANY_ZONE = "EC2's choice"  # a launch without a zone: EC2 picks one
T = TypeVar("T")


@dataclass(frozen=True)
class Candidate:
    region: str | None   # None: boto3's chain decides
    instance_type: str


@dataclass(frozen=True)
class Attempt:
    """One thing `up` tried: a zone (None: the candidate as a whole) and what came of it."""

    region: str
    instance_type: str
    market: str
    zone: str | None
    outcome: str   # launched, no capacity, not offered, quota, skipped
    reason: str = ""


@dataclass(frozen=True)
class Retry:
    """`--retry-until-up` (until=None: no bound) or `--retry-for`: rounds over all candidates, with backoff."""

    until: float | None = None          # time.monotonic() deadline
    backoff_s: float = 30.0


class NoCapacity(CloudError):
    """No candidate could launch: capacity, offering and quota refusals only."""


def candidate_types(settings: Settings) -> list[str]:
    """The instance types in order: those given, then (with `gpu`) the catalog's types with that GPU
    model, cheapest first. With `gpu`, a given type without that GPU is left out."""
    given = split_list(settings.instance_type)
    if not settings.gpu:
        return given
    from awsrun.account.prices import catalog_types

    models = catalog_types(settings.gpu)  # raises ConfigError naming the known models
    region = (split_list(settings.regions) or [settings.region or ""])[0]

    def price(name: str) -> tuple[float, int, str]:
        spec = catalog.lookup(name)
        listed = spec.price(region) if spec else None
        if listed is None and spec and spec.prices:
            listed = min(usd for _, usd in spec.prices)
        return (listed if listed is not None else math.inf, spec.gpu_count if spec else 0, name)

    return [t for t in given if t in models] + sorted((t for t in models if t not in given), key=price)


def candidate_regions(settings: Settings) -> list[str | None]:
    return list(split_list(settings.regions)) or [settings.region]


def candidates(settings: Settings) -> list[Candidate]:
    """Region by region (a region's network is made once and data stays put), types in order in each."""
    seen: list[Candidate] = []
    for region in candidate_regions(settings):
        for instance_type in candidate_types(settings):
            candidate = Candidate(region, instance_type)
            if candidate not in seen:
                seen.append(candidate)
    return seen


def quota_key(region: str, instance_type: str, spot: bool) -> tuple[str, str, bool]:
    try:
        family = catalog.quota_family(instance_type)
    except ValueError:
        family = instance_type
    return (region, family, spot)


def quota_fix(region: str, instance_type: str, count: int, spot: bool) -> str:
    """'quota L-DB2E81BA (Running On-Demand G and VT instances) in R, 4 vCPUs for 1 g4dn.xlarge: `awsrun quota
    request ...`': the quota, what the launch needs of it, and the command that asks for it."""
    try:
        name = catalog.quota_names(instance_type, spot)
    except ValueError:
        name = None
    spec = catalog.lookup(instance_type)
    code = QUOTA_CODES.get(name or "")
    amount = f", {spec.vcpus * count} vCPUs for {count} {instance_type}" if spec else ""
    what = f"quota {code} ({name})" if code else f"quota '{name}'" if name else "the vCPU quota"
    return f"{what} in {region}{amount}: `{request_command(instance_type, count, spot, region)}`"


class Failover:
    """One `up`'s walk over the candidates. `attempts` is what was tried, in order; `quota_fixes` the
    `awsrun quota request` commands that would have let a skipped region launch."""

    def __init__(self, settings: Settings, count: int, reporter: Reporter,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.count = count
        self.reporter = reporter
        self.sleep = sleep
        self.clock = clock
        self.attempts: list[Attempt] = []
        self.quota_fixes: list[str] = []
        self._blocked: set[tuple[str, str, bool]] = set()
        self.last: AwsrunError | None = None
        self.current_region = ""  # where the candidate being tried runs (set by the caller's try_one)

    @property
    def market(self) -> str:
        return "spot" if self.settings.spot else "on-demand"

    def refused(self, region: str, instance_type: str, zone: str | None, error: AwsrunError) -> None:
        """A zone said no (called by the launch for each zone it tries)."""
        outcome = "not offered" if isinstance(error, TypeNotOffered) else "no capacity"
        self.attempts.append(Attempt(region, instance_type, self.market, zone or ANY_ZONE, outcome, error.message))

    def run(self, try_one: Callable[[Candidate], tuple[str, T]], retry: Retry | None = None) -> T:
        """`try_one(candidate)` -> (the region it used, its result), or raises. The first that launches wins."""
        rounds = 0
        while True:
            rounds += 1
            for candidate in candidates(self.settings):
                region = candidate.region or self.current_region  # the chain's region, once a try has named it
                if region and quota_key(region, candidate.instance_type, self.settings.spot) in self._blocked:
                    self.attempts.append(Attempt(region, candidate.instance_type, self.market, None, "skipped",
                                                 "the quota of its family is short in this region"))
                    continue
                before = len(self.attempts)
                try:
                    return try_one(candidate)[1]
                except (CapacityError, TypeNotOffered) as exc:
                    self.last = exc
                    if len(self.attempts) == before:  # refused as a whole (the region lacks the type)
                        outcome = "not offered" if isinstance(exc, TypeNotOffered) else "no capacity"
                        self.attempts.append(Attempt(region or self.current_region, candidate.instance_type,
                                                     self.market, None, outcome,
                                                     exc.message))
                except _QUOTA_ERRORS as exc:
                    self.last = exc
                    where = region or self.current_region
                    self._blocked.add(quota_key(where, candidate.instance_type, self.settings.spot))
                    self.attempts.append(Attempt(where, candidate.instance_type, self.market, None, "quota",
                                                 exc.message))
                    self.quota_fixes.append(quota_fix(where or "REGION", candidate.instance_type, self.count,
                                                      self.settings.spot))
            if retry is None or not self._capacity_may_return() or \
                    (retry.until is not None and self.clock() >= retry.until):
                raise self.no_capacity(rounds)
            wait = min(retry.backoff_s * 2 ** (rounds - 1), MAX_BACKOFF_S)
            if retry.until is not None:
                wait = max(0.0, min(wait, retry.until - self.clock()))
            with self.reporter.phase(f"round {rounds} found no capacity; trying again in {wait:.0f}s") as phase:
                phase.update(f"last: {self.last.message if self.last else 'nothing tried'}")
                self.sleep(wait)

    def _capacity_may_return(self) -> bool:
        """Retrying helps only where capacity was missing: a quota or an offering does not change by waiting."""
        return any(a.outcome == "no capacity" for a in self.attempts)

    def no_capacity(self, rounds: int) -> AwsrunError:
        """What to raise: with one candidate tried once, EC2's own error (it says it all), else the summary."""
        if rounds == 1 and len(candidates(self.settings)) == 1 and self.last is not None:
            self.last.attempts = tuple(self.attempts)  # type: ignore[attr-defined]
            return self.last
        tried = [a for a in self.attempts if a.outcome != "skipped"]
        head = (f"no candidate could launch ({len(tried)} tried"
                + (f" in {rounds} rounds" if rounds > 1 else "") + ")")
        last = f"; last: {self.last.message}" if self.last else ""
        hints = []
        if self.quota_fixes:
            hints.append("raise the quota: " + "; ".join(dict.fromkeys(self.quota_fixes)))
        if any(a.outcome == "no capacity" for a in self.attempts):
            hints.append("add types (--instance-type a,b or --gpu MODEL), regions (--region a,b), "
                         "or wait for capacity with --retry-until-up / --retry-for 2h")
        error = NoCapacity(head + last, hint="; ".join(hints) or (self.last.hint if self.last else None))
        error.attempts = tuple(self.attempts)  # type: ignore[attr-defined]
        return error


_QUOTA_ERRORS = (QuotaError, QuotaTooLow)


def with_candidate(settings: Settings, candidate: Candidate) -> Settings:
    """The settings of one try: one type, one region."""
    return dataclasses.replace(settings, instance_type=candidate.instance_type,
                               region=candidate.region or settings.region)
