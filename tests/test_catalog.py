from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from awsrun.setup.catalog import (
    gp3_price,
    gpu_types,
    load_catalog,
    lookup,
    on_demand_price,
    quota_names,
)

REPO = Path(__file__).resolve().parents[1]
CAPABILITY = {"K80": "3.7", "V100": "7.0", "T4": "7.5", "A10G": "8.6", "L4": "8.9", "L40S": "8.9",
              "A100": "8.0", "H100": "9.0"}
EXPECTED = {
    "p2.xlarge", "p2.8xlarge", "p3.2xlarge", "p3.8xlarge", "g4dn.xlarge", "g4dn.2xlarge", "g4dn.12xlarge",
    "g5.xlarge", "g5.2xlarge", "g5.12xlarge", "g6.xlarge", "g6.12xlarge", "g6e.xlarge", "p4d.24xlarge",
    "p5.48xlarge", "t3.medium", "c6i.large",
}
FAMILY = {"p": "P", "g": "G and VT"}


def test_catalog_lists_the_expected_types_and_says_prices_need_refreshing():
    cat = load_catalog()
    assert set(cat.instances) == EXPECTED
    assert cat.prices_as_of and "refresh" in cat.source.lower()
    assert cat.regions == ("us-east-1", "us-west-2", "eu-west-1")
    assert load_catalog() is cat  # cached


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_entry_is_well_formed(name):
    spec = lookup(name)
    assert spec is not None and spec.instance_type == name
    assert spec.vcpus > 0 and spec.memory_gib > 0
    assert spec.quota_family == FAMILY.get(name[0], "Standard")
    if spec.gpu_model:
        assert spec.gpu_count > 0 and spec.gpu_memory_gib > 0
        assert spec.compute_capability == CAPABILITY[spec.gpu_model]
    else:
        assert (spec.gpu_count, spec.gpu_memory_gib, spec.compute_capability) == (0, 0, None)
    assert spec.price("us-east-1") is not None
    assert all(usd > 0 for _, usd in spec.prices)
    assert {region for region, _ in spec.prices} <= set(load_catalog().regions)


def test_raw_json_has_no_unknown_fields():
    raw = json.loads(resources.files("awsrun").joinpath("data/catalog.json").read_text())
    fields = {"gpu_model", "gpu_count", "gpu_memory_gib", "compute_capability", "vcpus", "memory_gib",
              "quota_family", "on_demand_usd_per_hour"}
    assert all(set(entry) == fields for entry in raw["instances"].values())


def test_p2_xlarge_is_one_k80():
    spec = lookup("p2.xlarge")
    assert (spec.gpu_model, spec.compute_capability, spec.gpu_count) == ("K80", "3.7", 1)


def test_unknown_types_return_none():
    assert lookup("m7i.large") is None
    assert lookup("not-a-type") is None
    assert on_demand_price("m7i.large", "us-east-1") is None
    assert on_demand_price("g4dn.xlarge", "ap-south-2") is None
    assert on_demand_price("g4dn.xlarge", "us-east-1") == pytest.approx(0.526)


def test_gp3_price_is_the_catalogs_positive_price_per_region_and_none_elsewhere():
    raw = json.loads(resources.files("awsrun").joinpath("data/catalog.json").read_text())
    cat = load_catalog()
    for region in cat.regions:
        assert gp3_price(region) == raw["ebs_gp3_usd_per_gb_month"][region]
        assert gp3_price(region) > 0
    assert set(raw["ebs_gp3_usd_per_gb_month"]) == set(cat.regions)
    assert gp3_price("ap-south-2") is None


def test_gpu_types():
    assert set(gpu_types()) == EXPECTED - {"t3.medium", "c6i.large"}


@pytest.mark.parametrize(
    "instance_type, spot, name",
    [
        ("p3.2xlarge", False, "Running On-Demand P instances"),
        ("p3.2xlarge", True, "All P Spot Instance Requests"),
        ("g5.xlarge", False, "Running On-Demand G and VT instances"),
        ("g5.xlarge", True, "All G and VT Spot Instance Requests"),
        ("t3.medium", False, "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
        ("c6i.large", True, "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
        # not catalogued: derived from the family letters
        ("m7i.large", False, "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
        ("g6e.12xlarge", True, "All G and VT Spot Instance Requests"),
        ("p5en.48xlarge", False, "Running On-Demand P instances"),
        ("inf2.xlarge", False, "Running On-Demand Inf instances"),
        ("trn1.2xlarge", True, "All Trn Spot Instance Requests"),
    ],
)
def test_quota_names(instance_type, spot, name):
    assert quota_names(instance_type, spot) == name


def test_quota_name_of_an_unrecognised_family_raises():
    with pytest.raises(ValueError):
        quota_names("u-6tb1.metal", False)


def test_catalog_and_stack_stay_import_light():
    code = (
        "import sys, awsrun.setup.catalog, awsrun.setup.stack\n"
        "heavy = {'boto3', 'botocore', 'click', 'torch', 'rich', 'paramiko'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
