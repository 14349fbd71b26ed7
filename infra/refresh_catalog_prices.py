#!/usr/bin/env python3
"""Refresh the on-demand list prices in awsrun/data/catalog.json from AWS's public Price List API.

    python infra/refresh_catalog_prices.py                 # every region of the catalog, from AWS
    python infra/refresh_catalog_prices.py --offer us-east-1=index.csv   # that region from a file downloaded before

For each region of the catalog it streams the region's EC2 offer file in CSV form

    https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/REGION/index.csv

(public, no AWS account or credentials needed; a few hundred MB per region, read row by row and never
held in memory), keeps the OnDemand hourly price of each catalog type for Linux, shared tenancy, no
pre-installed software, no license, capacity "Used" (a plain instance), and writes the prices, the offer
file's publication date and its URL into the catalog. A type the offer file does not list in a region
gets null (not offered there). Two different prices for one type are an error, never a guess.

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


class OfferError(Exception):
    """The offer file is not what this script understands, or is ambiguous for a type."""


@dataclass
class OfferPrices:
    publication_date: str = ""                 # e.g. 2026-11-20T18:40:11Z
    version: str = ""
    prices: dict[str, float] = field(default_factory=dict)   # instance type -> USD/hour


def parse_offer_csv(lines: Iterable[str], instance_types: set[str]) -> OfferPrices:
    """The on-demand hourly prices of `instance_types` from an EC2 offer file in CSV form: a few
    `"Name","value"` lines of metadata, then a header row, then one row per price."""
    rows: Iterator[list[str]] = csv.reader(lines)
    found = OfferPrices()
    header: list[str] | None = None
    for row in rows:
        if len(row) == 2:  # metadata before the header
            name, value = row
            if name == "Publication Date":
                found.publication_date = value
            elif name == "Version":
                found.version = value
            continue
        if row and row[0] == "SKU":
            header = row
            break
    if header is None:
        raise OfferError("no header row (one starting with \"SKU\"): is this an EC2 offer file in CSV form?")
    missing = [name for name in [*WANTED, "Instance Type", "PricePerUnit"] if name not in header]
    if missing:
        raise OfferError(f"the offer file has no column {', '.join(repr(m) for m in missing)}")
    index = {name: header.index(name) for name in [*WANTED, "Instance Type", "PricePerUnit"]}
    market = header.index("MarketOption") if "MarketOption" in header else None
    seen: dict[str, set[float]] = {}
    for row in rows:
        if len(row) < len(header):
            continue
        instance_type = row[index["Instance Type"]]
        if instance_type not in instance_types:
            continue
        if any(row[index[name]] != value for name, value in WANTED.items()):
            continue
        if market is not None and row[market] not in ("", "OnDemand"):
            continue  # capacity blocks and the like, where the file has that column
        price = float(row[index["PricePerUnit"]])
        if price > 0:
            seen.setdefault(instance_type, set()).add(price)
    ambiguous = {t: sorted(p) for t, p in seen.items() if len(p) > 1}
    if ambiguous:
        raise OfferError(f"several on-demand Linux prices for one type: {ambiguous}")
    found.prices = {t: next(iter(p)) for t, p in sorted(seen.items())}
    if not found.publication_date:
        raise OfferError("the offer file names no \"Publication Date\"")
    return found


def refreshed_catalog(catalog: dict, offers: dict[str, OfferPrices], urls: dict[str, str]) -> dict:
    """The catalog with each region's prices from its offer file, dated and sourced."""
    updated = json.loads(json.dumps(catalog))
    for region, offer in offers.items():
        for name, spec in updated["instances"].items():
            spec.setdefault("on_demand_usd_per_hour", {})[region] = offer.prices.get(name)
    dates = sorted({offer.publication_date[:10] for offer in offers.values()})
    updated["prices_as_of"] = dates[-1] if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
    updated["prices_origin"] = f"AWS Price List API offer files published {', '.join(dates)}"
    where = "; ".join(f"{region}: {urls[region]} (publication date {offer.publication_date}, version "
                      f"{offer.version})" for region, offer in sorted(offers.items()))
    updated["source"] = (
        "On-demand list prices in USD/hour (Linux, shared tenancy, no pre-installed software, capacity Used) "
        f"from the public AWS Price List API offer files: {where}. Written by infra/refresh_catalog_prices.py; "
        "run it again to refresh them. null = not offered in that region.")
    return updated


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
        print(f"  {region}: {len(offers[region].prices)} of {len(types)} types priced "
              f"(published {offers[region].publication_date})", file=sys.stderr)
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
