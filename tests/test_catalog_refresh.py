"""infra/refresh_catalog_prices.py: its parser on a small excerpt of an EC2 offer file (CSV form, the columns
and metadata lines AWS publishes), and the catalog it writes. Nothing here reaches the network."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "refresh_catalog_prices.py"
spec = importlib.util.spec_from_file_location("refresh_catalog_prices", SCRIPT)
refresh = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = refresh  # its dataclasses look their module up while being defined
spec.loader.exec_module(refresh)

COLUMNS = ["SKU", "OfferTermCode", "RateCode", "TermType", "PriceDescription", "EffectiveDate", "StartingRange",
           "EndingRange", "Unit", "PricePerUnit", "Currency", "Product Family", "serviceCode", "Location",
           "Instance Type", "Tenancy", "Operating System", "License Model", "Pre Installed S/W", "CapacityStatus",
           "Volume API Name", "Location Type", "Region Code"]


def row(sku: str, instance_type: str, price: str, **overrides: str) -> str:
    values = {"SKU": sku, "OfferTermCode": "JRTCKXETXF", "RateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
              "TermType": "OnDemand", "PriceDescription": f"${price} per On Demand Linux {instance_type} Instance Hour",
              "EffectiveDate": "2026-11-01", "StartingRange": "0", "EndingRange": "Inf", "Unit": "Hrs",
              "PricePerUnit": price, "Currency": "USD", "Product Family": "Compute Instance",
              "serviceCode": "AmazonEC2", "Location": "US East (N. Virginia)", "Instance Type": instance_type,
              "Tenancy": "Shared", "Operating System": "Linux", "License Model": "No License required",
              "Pre Installed S/W": "NA", "CapacityStatus": "Used", "Volume API Name": "", "Location Type": "AWS Region",
              "Region Code": "us-east-1", **overrides}
    return ",".join(f'"{values[c]}"' for c in COLUMNS)


def storage_row(sku: str, volume: str, price: str, **overrides: str) -> str:
    """An EBS row: no instance type, tenancy or operating system, a price per GB-month unless overridden."""
    return row(sku, "", price, **{"Product Family": "Storage", "Unit": "GB-Mo", "Volume API Name": volume,
                                  "PriceDescription": f"${price} per GB-month of {volume} provisioned storage",
                                  "Tenancy": "", "Operating System": "", "License Model": "",
                                  "Pre Installed S/W": "", "CapacityStatus": "", **overrides})


EXCERPT = "\n".join([
    '"FormatVersion","v1.0"',
    '"Disclaimer","This pricing list is for informational purposes only."',
    '"Publication Date","2026-11-20T18:40:11Z"',
    '"Version","20261120184011"',
    '"OfferCode","AmazonEC2"',
    ",".join(f'"{c}"' for c in COLUMNS),
    row("AAA", "g4dn.xlarge", "0.5260000000"),
    row("AAB", "g4dn.xlarge", "0.7100000000", **{"Operating System": "Windows"}),
    row("AAC", "g4dn.xlarge", "0.8000000000", **{"Pre Installed S/W": "SQL Std"}),
    row("AAD", "g4dn.xlarge", "0.5260000000", CapacityStatus="UnusedCapacityReservation"),
    row("AAE", "g4dn.xlarge", "1.0000000000", Tenancy="Dedicated"),
    row("AAF", "g4dn.xlarge", "0.3000000000", TermType="Reserved", Unit="Hrs"),
    row("AAG", "g4dn.xlarge", "0.0000000000"),  # a zero-priced row (reservation-style): never a price
    row("BBB", "p3.2xlarge", "3.0600000000"),
    row("CCC", "m5.large", "0.0960000000"),  # not in the catalog
    storage_row("SSA", "gp3", "0.0800000000"),
    storage_row("SSB", "gp2", "0.1000000000"),
    storage_row("SSC", "io2", "0.1250000000"),
    storage_row("SSD", "gp3", "0.0050000000", Unit="IOPS-Mo"),  # gp3's provisioned IOPS: differs only in its unit
    storage_row("SSE", "gp3", "0.0960000000", **{"Location Type": "AWS Local Zone"}),  # not the region's own price
    storage_row("SSF", "gp3", "0.0400000000", TermType="Reserved"),
]) + "\n"


def test_the_parser_keeps_the_plain_linux_on_demand_hour_of_the_catalogs_types():
    found = refresh.parse_offer_csv(EXCERPT.splitlines(keepends=True), {"g4dn.xlarge", "p3.2xlarge", "p5.48xlarge"})
    assert found.publication_date == "2026-11-20T18:40:11Z" and found.version == "20261120184011"
    assert found.prices == {"g4dn.xlarge": 0.526, "p3.2xlarge": 3.06}


def test_the_parser_keeps_the_on_demand_gp3_storage_price_per_gb_month_only():
    found = refresh.parse_offer_csv(EXCERPT.splitlines(keepends=True), {"g4dn.xlarge"})
    assert found.gp3_usd_per_gb_month == 0.08


def test_two_gp3_storage_prices_are_an_error_never_a_guess():
    twice = EXCERPT + storage_row("SSG", "gp3", "0.0900000000") + "\n"
    with pytest.raises(refresh.OfferError, match=r"several on-demand gp3 storage prices .*\[0\.08, 0\.09\]"):
        refresh.parse_offer_csv(twice.splitlines(keepends=True), {"g4dn.xlarge"})


def test_a_file_without_a_volume_api_name_column_still_gives_instance_prices_and_no_gp3_price():
    header = ",".join(f'"{c}"' for c in COLUMNS)
    without = EXCERPT.replace(header, header.replace('"Volume API Name"', '"Volume"'))
    found = refresh.parse_offer_csv(without.splitlines(keepends=True), {"g4dn.xlarge", "p3.2xlarge"})
    assert found.prices == {"g4dn.xlarge": 0.526, "p3.2xlarge": 3.06}
    assert found.gp3_usd_per_gb_month is None


def test_two_prices_for_one_type_or_a_foreign_file_are_errors_never_guesses():
    twice = EXCERPT + row("DDD", "p3.2xlarge", "3.5000000000") + "\n"
    with pytest.raises(refresh.OfferError, match="several on-demand Linux prices"):
        refresh.parse_offer_csv(twice.splitlines(keepends=True), {"p3.2xlarge"})
    with pytest.raises(refresh.OfferError, match="no header row"):
        refresh.parse_offer_csv(['{"formatVersion": "v1.0"}\n'], {"p3.2xlarge"})
    without = EXCERPT.replace('"CapacityStatus"', '"Capacity"')
    with pytest.raises(refresh.OfferError, match="no column 'CapacityStatus'"):
        refresh.parse_offer_csv(without.splitlines(keepends=True), {"p3.2xlarge"})


def test_the_script_writes_dated_sourced_prices_for_every_region_of_the_catalog(tmp_path):
    catalog = {"prices_as_of": "2025-06", "prices_origin": "unverified", "source": "old", "regions": ["us-east-1", "eu-west-1"],
               "instances": {"g4dn.xlarge": {"on_demand_usd_per_hour": {"us-east-1": 0.5, "eu-west-1": 0.6}},
                             "p5.48xlarge": {"on_demand_usd_per_hour": {"us-east-1": 55.0, "eu-west-1": None}}}}
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))
    east, west = tmp_path / "east.csv", tmp_path / "west.csv"
    east.write_text(EXCERPT)
    west.write_text(EXCERPT.replace("0.5260000000", "0.5870000000").replace("2026-11-20T", "2026-11-21T")
                    .replace("0.0800000000", "0.0880000000"))
    assert refresh.main(["--catalog", str(path), "--offer", f"us-east-1={east}", "--offer", f"eu-west-1={west}"]) == 0
    written = json.loads(path.read_text())
    assert written["instances"]["g4dn.xlarge"]["on_demand_usd_per_hour"] == {"us-east-1": 0.526, "eu-west-1": 0.587}
    assert written["instances"]["p5.48xlarge"]["on_demand_usd_per_hour"] == {"us-east-1": None, "eu-west-1": None}
    assert written["ebs_gp3_usd_per_gb_month"] == {"us-east-1": 0.08, "eu-west-1": 0.088}
    assert written["prices_as_of"] == "2026-11-20..2026-11-21"
    assert written["prices_origin"] == "AWS Price List API offer files published 2026-11-20, 2026-11-21"
    assert f"us-east-1: {east} (publication date 2026-11-20T18:40:11Z, version 20261120184011)" in written["source"]
    assert "gp3 EBS storage list price in USD per GB-month" in written["source"]
    with pytest.raises(refresh.OfferError, match="not a region of the catalog"):
        refresh.main(["--catalog", str(path), "--offer", f"ap-south-1={east}"])


def test_a_region_whose_file_lists_no_gp3_storage_price_gets_null_and_says_so(tmp_path, capsys):
    catalog = {"prices_as_of": "2025-06", "source": "old", "regions": ["us-east-1", "eu-west-1"],
               "ebs_gp3_usd_per_gb_month": {"us-east-1": 0.08, "eu-west-1": 0.088},
               "instances": {"g4dn.xlarge": {"on_demand_usd_per_hour": {"us-east-1": 0.5, "eu-west-1": 0.6}}}}
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))
    east, west = tmp_path / "east.csv", tmp_path / "west.csv"
    east.write_text(EXCERPT)
    west.write_text("".join(line for line in EXCERPT.splitlines(keepends=True) if '"SSA"' not in line))
    assert refresh.main(["--catalog", str(path), "--offer", f"us-east-1={east}", "--offer", f"eu-west-1={west}"]) == 0
    assert json.loads(path.read_text())["ebs_gp3_usd_per_gb_month"] == {"us-east-1": 0.08, "eu-west-1": None}
    log = capsys.readouterr().err
    assert "us-east-1: 1 of 1 types priced, gp3 storage 0.08 USD per GB-month" in log
    assert "eu-west-1: 1 of 1 types priced, no gp3 storage price (left null)" in log


def test_the_shipped_catalog_says_its_prices_are_unverified_and_how_to_check_them():
    shipped = json.loads((SCRIPT.parents[1] / "awsrun" / "data" / "catalog.json").read_text())
    assert shipped["prices_origin"].startswith("unverified")
    assert "infra/refresh_catalog_prices.py" in shipped["source"] and refresh.OFFER_URL.split("{")[0] in shipped["source"]
    assert "gp3" in shipped["source"] and set(shipped["ebs_gp3_usd_per_gb_month"]) == set(shipped["regions"])
