#!/usr/bin/env python3
"""Refresh the list prices (instances on demand, gp3 storage) in awsrun/data/catalog.json from AWS's Price List API.

    python infra/refresh_catalog_prices.py                 # every region of the catalog, from AWS
    python infra/refresh_catalog_prices.py --offer us-east-1=index.csv   # that region from a file downloaded before

For each region of the catalog it streams the region's EC2 offer file in CSV form

    https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/REGION/index.csv

(public, no AWS account or credentials needed; a few hundred MB per region, read row by row and never
held in memory), keeps the OnDemand hourly price of each catalog type for Linux, shared tenancy, no
pre-installed software, no license, capacity "Used" (a plain instance), and the region's OnDemand gp3 EBS
storage price in USD per GB-month, all in the same single pass, and writes the prices, the offer file's
publication date and its URL into the catalog. A type the offer file does not list in a region gets null
(not offered there); so does the gp3 price of a region whose file lists none. Two different prices for one
type, or for gp3 storage, are an error, never a guess.

Standard library only; it runs on a developer's machine, never as part of awsrun itself.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

OFFER_URL = "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/{region}/index.csv"
CATALOG = Path(__file__).resolve().parents[1] / "awsrun" / "data" / "catalog.json"

# the attributes of a plain Linux on-demand instance hour, as the offer file's columns spell them
WANTED = {
    "TermType": "OnDemand",
    "Unit": "Hrs",
    "Currency": "USD",
    "Product Family": "Compute Instance",
    "Tenancy": "Shared",
    "Operating System": "Linux",
    "Pre Installed S/W": "NA",
    "License Model": "No License required",
    "CapacityStatus": "Used",
}
# the attributes of the gp3 storage price per GB-month (gp3's IOPS and throughput rows have other units)
GP3_STORAGE = {
    "TermType": "OnDemand",
    "Unit": "GB-Mo",
    "Currency": "USD",
    "Product Family": "Storage",
    "Volume API Name": "gp3",
}
# where the file has this column: the region's own price, not a Local Zone's, Wavelength Zone's or Outpost's
REGION_LOCATION = ("Location Type", "AWS Region")


class OfferError(Exception):
    """The offer file is not what this script understands, or is ambiguous for a type or for gp3 storage."""


@dataclass
class OfferPrices:
    publication_date: str = ""                 # e.g. 2026-11-20T18:40:11Z
    version: str = ""
    prices: dict[str, float] = field(default_factory=dict)   # instance type -> USD/hour
    gp3_usd_per_gb_month: float | None = None                # None: the file lists no gp3 storage price


def parse_offer_csv(lines: Iterable[str], instance_types: set[str]) -> OfferPrices:
    """The on-demand hourly prices of `instance_types` and the gp3 storage price from an EC2 offer file in CSV
    form: a few `"Name","value"` lines of metadata, then a header row, then one row per price."""
    rows: Iterator[list[str]] = csv.reader(lines)
    found = OfferPrices()
    header = _read_metadata_up_to_header(rows, found)
    index = _column_index(header)
    gp3_filter = _gp3_storage_filter(header)
    market = header.index("MarketOption") if "MarketOption" in header else None
    seen: dict[str, set[float]] = {}
    gp3_prices: set[float] = set()
    for row in rows:
        if len(row) < len(header):
            continue
        instance_type = row[index["Instance Type"]]
        if instance_type in instance_types and _is_plain_instance_hour(row, index, market):
            if price := _positive_price(row, index):
                seen.setdefault(instance_type, set()).add(price)
        elif gp3_filter and _matches(row, index, gp3_filter) and (price := _positive_price(row, index)):
            gp3_prices.add(price)
    ambiguous = {t: sorted(p) for t, p in seen.items() if len(p) > 1}
    if ambiguous:
        raise OfferError(f"several on-demand Linux prices for one type: {ambiguous}")
    if len(gp3_prices) > 1:
        raise OfferError(f"several on-demand gp3 storage prices (USD per GB-month): {sorted(gp3_prices)}")
    found.prices = {t: next(iter(p)) for t, p in sorted(seen.items())}
    found.gp3_usd_per_gb_month = next(iter(gp3_prices), None)
    if not found.publication_date:
        raise OfferError("the offer file names no \"Publication Date\"")
    return found


def _read_metadata_up_to_header(rows: Iterator[list[str]], found: OfferPrices) -> list[str]:
    """Read the metadata lines into `found` and return the header row."""
    for row in rows:
        if len(row) == 2:
            name, value = row
            if name == "Publication Date":
                found.publication_date = value
            elif name == "Version":
                found.version = value
            continue
        if row and row[0] == "SKU":
            return row
    raise OfferError("no header row (one starting with \"SKU\"): is this an EC2 offer file in CSV form?")


def _column_index(header: list[str]) -> dict[str, int]:
    """Where each column the script reads is; the instance price columns must all be there."""
    required = [*WANTED, "Instance Type", "PricePerUnit"]
    missing = [name for name in required if name not in header]
    if missing:
        raise OfferError(f"the offer file has no column {', '.join(repr(m) for m in missing)}")
    optional = [name for name in [*GP3_STORAGE, REGION_LOCATION[0]] if name in header]
    return {name: header.index(name) for name in [*required, *optional]}


def _gp3_storage_filter(header: list[str]) -> dict[str, str] | None:
    """The attributes of the gp3 storage row, or None when the file has no "Volume API Name" column."""
    if "Volume API Name" not in header:
        return None
    location_type, in_region = REGION_LOCATION
    return {**GP3_STORAGE, location_type: in_region} if location_type in header else dict(GP3_STORAGE)


def _is_plain_instance_hour(row: list[str], index: dict[str, int], market: int | None) -> bool:
    if market is not None and row[market] not in ("", "OnDemand"):
        return False  # capacity blocks and the like, where the file has that column
    return _matches(row, index, WANTED)


def _matches(row: list[str], index: dict[str, int], wanted: dict[str, str]) -> bool:
    return all(row[index[name]] == value for name, value in wanted.items())


def _positive_price(row: list[str], index: dict[str, int]) -> float | None:
    """The row's price; None for a zero-priced row (reservation-style), which is never a price."""
    price = float(row[index["PricePerUnit"]])
    return price if price > 0 else None


def refreshed_catalog(catalog: dict, offers: dict[str, OfferPrices], urls: dict[str, str]) -> dict:
    """The catalog with each region's prices from its offer file, dated and sourced."""
    updated = json.loads(json.dumps(catalog))
    for region, offer in offers.items():
        for name, spec in updated["instances"].items():
            spec.setdefault("on_demand_usd_per_hour", {})[region] = offer.prices.get(name)
        updated.setdefault("ebs_gp3_usd_per_gb_month", {})[region] = offer.gp3_usd_per_gb_month
    dates = sorted({offer.publication_date[:10] for offer in offers.values()})
    updated["prices_as_of"] = dates[-1] if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
    updated["prices_origin"] = f"AWS Price List API offer files published {', '.join(dates)}"
    where = "; ".join(f"{region}: {urls[region]} (publication date {offer.publication_date}, version "
                      f"{offer.version})" for region, offer in sorted(offers.items()))
    updated["source"] = (
        "On-demand list prices in USD/hour (Linux, shared tenancy, no pre-installed software, capacity Used) "
        "and the on-demand gp3 EBS storage list price in USD per GB-month (ebs_gp3_usd_per_gb_month), both "
        f"from the public AWS Price List API offer files: {where}. Written by infra/refresh_catalog_prices.py; "
        "run it again to refresh them. null = not offered in that region (for gp3: no gp3 storage price in "
        "that region's offer file).")
    return updated


def _gp3_summary(offer: OfferPrices) -> str:
    if offer.gp3_usd_per_gb_month is None:
        return "no gp3 storage price (left null)"
    return f"gp3 storage {offer.gp3_usd_per_gb_month} USD per GB-month"


def _open_offer(source: str) -> io.TextIOBase:
    if source.startswith(("https://", "http://")):
        response = urllib.request.urlopen(source, timeout=60)  # noqa: S310 - the fixed AWS pricing host
        return io.TextIOWrapper(response, encoding="utf-8", newline="")
    return open(source, encoding="utf-8", newline="")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=CATALOG, help="the catalog to update (default: awsrun's)")
    parser.add_argument("--offer", action="append", default=[], metavar="REGION=PATH_OR_URL",
                        help="read REGION's offer file from here instead of AWS (repeatable)")
    args = parser.parse_args(argv)
    catalog = json.loads(args.catalog.read_text(encoding="utf-8"))
    given = dict(spec.split("=", 1) for spec in args.offer)
    unknown = sorted(set(given) - set(catalog["regions"]))
    if unknown:
        raise OfferError(f"--offer for {', '.join(unknown)}: not a region of the catalog ({', '.join(catalog['regions'])})")
    regions = catalog["regions"]  # all of them: the catalog's date and source then hold for every price
    types = set(catalog["instances"])
    offers, urls = {}, {}
    for region in regions:
        urls[region] = given.get(region, OFFER_URL.format(region=region))
        print(f"reading {urls[region]}", file=sys.stderr)
        with _open_offer(urls[region]) as stream:
            offers[region] = parse_offer_csv(stream, types)
        print(f"  {region}: {len(offers[region].prices)} of {len(types)} types priced, "
              f"{_gp3_summary(offers[region])} (published {offers[region].publication_date})", file=sys.stderr)
    updated = refreshed_catalog(catalog, offers, urls)
    temp = args.catalog.with_suffix(".json.tmp")
    temp.write_text(json.dumps(updated, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, args.catalog)
    print(f"wrote {args.catalog}: prices as of {updated['prices_as_of']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OfferError, OSError, ValueError) as exc:
        print(f"refresh_catalog_prices: error: {exc}", file=sys.stderr)
        sys.exit(1)
