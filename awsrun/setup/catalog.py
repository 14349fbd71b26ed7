"""Small built-in catalog of EC2 instance types (data in ``data/catalog.json``).

Any EC2 type can be rented; the catalog only adds what the API does not tell us
cheaply (GPU model, compute capability, list price, quota family), and the gp3
EBS storage list price per region. Unknown types and regions therefore give
``None`` rather than an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Mapping

# Service Quotas names, keyed by quota family (the letters Service Quotas groups
# instance families by). "Standard" covers A, C, D, H, I, M, R, T and Z.
_QUOTA_LABEL = {
    "P": "P",
    "G and VT": "G and VT",
    "Standard": "Standard (A, C, D, H, I, M, R, T, Z)",
    "F": "F",
    "Inf": "Inf",
    "Trn": "Trn",
    "X": "X",
    "DL": "DL",
    "HPC": "HPC",
}
_FAMILY_PREFIX = {
    "p": "P",
    "g": "G and VT",
    "vt": "G and VT",
    "f": "F",
    "inf": "Inf",
    "trn": "Trn",
    "x": "X",
    "dl": "DL",
    "hpc": "HPC",
    **{letter: "Standard" for letter in "acdhimrtz"},
}


@dataclass(frozen=True)
class InstanceSpec:
    """One catalog entry. ``prices`` holds (region, USD/hour) pairs."""

    instance_type: str
    gpu_model: str | None
    gpu_count: int
    gpu_memory_gib: int
    compute_capability: str | None
    vcpus: int
    memory_gib: float
    quota_family: str
    prices: tuple[tuple[str, float], ...]

    @property
    def has_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def total_gpu_memory_gib(self) -> int:
        return self.gpu_count * self.gpu_memory_gib

    def price(self, region: str) -> float | None:
        return dict(self.prices).get(region)


@dataclass(frozen=True)
class Catalog:
    prices_as_of: str
    source: str
    regions: tuple[str, ...]
    instances: Mapping[str, InstanceSpec]
    prices_origin: str = ""   # a few words: where the list prices come from and whether they were checked
    gp3_usd_per_gb_month: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


def _spec(name: str, raw: dict) -> InstanceSpec:
    prices = tuple(
        (region, float(usd))
        for region, usd in raw.get("on_demand_usd_per_hour", {}).items()
        if usd is not None
    )
    return InstanceSpec(
        instance_type=name,
        gpu_model=raw.get("gpu_model"),
        gpu_count=int(raw.get("gpu_count", 0)),
        gpu_memory_gib=int(raw.get("gpu_memory_gib", 0)),
        compute_capability=raw.get("compute_capability"),
        vcpus=int(raw["vcpus"]),
        memory_gib=float(raw["memory_gib"]),
        quota_family=raw["quota_family"],
        prices=prices,
    )


def _known_prices(raw: dict) -> Mapping[str, float]:
    """region -> price, leaving out the regions priced null."""
    return MappingProxyType({region: float(usd) for region, usd in raw.items() if usd is not None})


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Read and parse the packaged catalog once per process."""
    text = resources.files("awsrun").joinpath("data/catalog.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    instances = {name: _spec(name, raw) for name, raw in doc["instances"].items()}
    return Catalog(
        prices_as_of=doc["prices_as_of"],
        source=doc["source"],
        regions=tuple(doc["regions"]),
        instances=MappingProxyType(instances),
        prices_origin=doc.get("prices_origin", ""),
        gp3_usd_per_gb_month=_known_prices(doc.get("ebs_gp3_usd_per_gb_month", {})),
    )


def lookup(instance_type: str) -> InstanceSpec | None:
    """The catalog entry for ``instance_type``, or None if it is not catalogued."""
    return load_catalog().instances.get(instance_type)


def on_demand_price(instance_type: str, region: str) -> float | None:
    """List on-demand USD/hour, or None when the type or region is not catalogued."""
    spec = lookup(instance_type)
    return spec.price(region) if spec else None


def gp3_price(region: str) -> float | None:
    """List USD per GB-month of gp3 EBS storage, or None when the catalog has no price for the region."""
    return load_catalog().gp3_usd_per_gb_month.get(region)


def gpu_types() -> list[str]:
    """Catalogued instance types that have at least one GPU."""
    return [name for name, spec in load_catalog().instances.items() if spec.has_gpu]


def quota_family(instance_type: str) -> str:
    """Service Quotas family ("P", "G and VT", "Standard", ...) of any EC2 type."""
    spec = lookup(instance_type)
    if spec:
        return spec.quota_family
    family = instance_type.split(".", 1)[0].lower()
    letters = family[: len(family) - len(family.lstrip("abcdefghijklmnopqrstuvwxyz"))]
    # Exact family letters first ("inf", "trn", "dl"), then the first letter
    # ("im4gn" is an I type, "gr6" a G type).
    for key in (letters, letters[:1]):
        if key in _FAMILY_PREFIX:
            return _FAMILY_PREFIX[key]
    raise ValueError(f"cannot tell the quota family of instance type {instance_type!r}")


def quota_names(instance_type: str, spot: bool) -> str:
    """The Service Quotas quota name that limits ``instance_type`` (vCPU-based)."""
    family = quota_family(instance_type)
    label = _QUOTA_LABEL[family]
    if spot and family == "HPC":
        raise ValueError(f"{instance_type} is an HPC type; HPC types cannot run as Spot")
    if spot:
        return f"All {label} Spot Instance Requests"
    return f"Running On-Demand {label} instances"
