"""Prices and the pre-launch checks of `up`: exact builders; then the real CLI against the moto endpoint with
realistic per-zone spot prices seeded into it (`aws.set_spot_prices`): `prices` lists them cheapest first,
`up --spot` launches a persistent/stop request in the cheapest zone, `status` prices the instance at its
zone's spot price, `stop`/`down` say what the session cost; a short vCPU quota stops `up` before anything
is created, with the exact `awsrun quota request` command."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from awsrun.account import prices
from awsrun.errors import ConfigError
from awsrun.providers import aws_requests as req
from awsrun.state import InstanceRecord

SSH_CIDR = "203.0.113.7/32"
# g4dn.xlarge spot in us-east-1, as it looks on a real day: every zone different, 1d the cheapest.
G4DN_SPOT = {"us-east-1a": 0.2331, "us-east-1b": 0.2617, "us-east-1c": 0.2104, "us-east-1d": 0.1893,
             "us-east-1f": 0.2502}
T4_SPOT = {("g4dn.xlarge", z): p for z, p in G4DN_SPOT.items()} | {
    ("g4dn.2xlarge", "us-east-1a"): 0.3308, ("g4dn.2xlarge", "us-east-1b"): 0.2970,
    ("g4dn.12xlarge", "us-east-1c"): 1.5022}


def ok(result):
    assert result.exit_code == 0 and "Traceback" not in result.stderr, result
    return result


# pure ---------------------------------------------------------------------------------------------
def test_spot_price_history_request_and_latest_price_per_zone():
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    assert req.spot_price_history_request(["g5.xlarge", "g4dn.xlarge", "g5.xlarge"], "us-east-1b", now) == {
        "InstanceTypes": ["g4dn.xlarge", "g5.xlarge"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": now,
        "AvailabilityZone": "us-east-1b"}
    assert "AvailabilityZone" not in req.spot_price_history_request(["g5.xlarge"], None, now)
    older = now - timedelta(hours=1)
    entries = [
        {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-east-1a", "SpotPrice": "0.4100", "Timestamp": older},
        {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-east-1a", "SpotPrice": "0.3900", "Timestamp": now},
        {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-east-1b", "SpotPrice": "0.4400", "Timestamp": older},
        {"InstanceType": "g4dn.xlarge", "AvailabilityZone": "us-east-1b", "SpotPrice": "0.2", "Timestamp": older},
    ]
    assert req.latest_spot_prices(entries) == {"g4dn.xlarge": {"us-east-1b": 0.2},
                                               "g5.xlarge": {"us-east-1a": 0.39, "us-east-1b": 0.44}}
    assert req.latest_spot_prices(reversed(entries)) == req.latest_spot_prices(entries)


def test_autostop_down_launches_one_time_spot_that_terminates_on_shutdown():
    base = req.LaunchSpec(cluster="c", owner="o", node=0, launch_token="t", instance_type="g4dn.xlarge",
                          image_id="ami-1", root_device_name="/dev/sda1", volume_gb=100, key_name="k",
                          security_group_id="sg-1", spot=True)
    default = req.run_instances_request(base)
    assert default["InstanceInitiatedShutdownBehavior"] == "stop"
    assert default["InstanceMarketOptions"]["SpotOptions"] == {
        "SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}
    down = req.run_instances_request(req.LaunchSpec(**{**base.__dict__, "shutdown_behavior": "terminate"}))
    assert down["InstanceInitiatedShutdownBehavior"] == "terminate"
    # a persistent request would relaunch the instance that autostop terminated
    assert down["InstanceMarketOptions"]["SpotOptions"] == {
        "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
    assert req.shutdown_behavior_request("i-1", "terminate") == {
        "InstanceId": "i-1", "Attribute": "instanceInitiatedShutdownBehavior", "Value": "terminate"}
    for hostile in ("halt", "terminate; reboot", ""):
        with pytest.raises(ConfigError):
            req.shutdown_behavior_request("i-1", hostile)


def test_cheapest_zones_keep_to_the_offering_zones():
    spot = {"z-a": 0.3, "z-b": 0.1, "z-c": 0.2, "z-x": 0.01}
    assert prices.cheapest_zones(spot, None) == ["z-x", "z-b", "z-c", "z-a"]
    assert prices.cheapest_zones(spot, ("z-a", "z-b", "z-c", "z-d")) == ["z-b", "z-c", "z-a", "z-d"]
    assert prices.cheapest_zones({}, ("z-b", "z-a")) == ["z-a", "z-b"]


def test_session_cost_is_hours_since_start_times_the_zone_price():
    class Provider:
        calls = 0

        def spot_prices(self, instance_type):
            Provider.calls += 1
            return {"us-east-1c": 0.21, "us-east-1d": 0.19}

    book = prices.PriceBook(lambda region: Provider())
    records = [
        InstanceRecord("i-spot", "c", "running", instance_type="g4dn.xlarge", market="spot", zone="us-east-1d",
                       launched_at=1000.0),
        InstanceRecord("i-od", "c", "running", instance_type="g4dn.xlarge", market="on-demand", launched_at=1000.0),
        InstanceRecord("i-stopped", "c", "stopped", instance_type="g4dn.xlarge", market="spot", launched_at=10.0),
    ]
    costs = prices.session_costs(records, "us-east-1", book, now=1000.0 + 2 * 3600)
    assert [(c.instance_id, c.seconds, c.hourly_usd, c.price_source, c.cost_usd) for c in costs] == [
        ("i-spot", 7200.0, 0.19, "spot price", 0.38),
        ("i-od", 7200.0, 0.526, "on-demand list price", 1.052),
    ]
    assert prices.total(costs) == 1.432 and Provider.calls == 1  # one spot call per type and region


def test_unknown_gpu_model_names_the_known_ones():
    with pytest.raises(ConfigError) as raised:
        prices.catalog_types("RTX9090")
    assert "T4" in raised.value.hint and "A10G" in raised.value.hint
    assert prices.catalog_types("t4") == ["g4dn.xlarge", "g4dn.2xlarge", "g4dn.12xlarge"]


# against moto -------------------------------------------------------------------------------------
def test_prices_lists_spot_per_zone_cheapest_gpu_hour_first(cli, aws):
    aws.set_spot_prices("us-east-1", T4_SPOT)
    table = json.loads(ok(cli("prices", "--gpu", "T4", "--json")).stdout)
    rows = {r["instance_type"]: r for r in table["types"]}
    assert [r["instance_type"] for r in table["types"]] == ["g4dn.xlarge", "g4dn.2xlarge", "g4dn.12xlarge"]
    first = rows["g4dn.xlarge"]
    assert [(z["zone"], z["usd"]) for z in first["spot_usd"]] == sorted(G4DN_SPOT.items(), key=lambda item: item[1])
    assert (first["cheapest_zone"], first["spot_min_usd"], first["on_demand_usd"]) == ("us-east-1d", 0.1893, 0.526)
    assert first["spot_saving"] == round(1 - 0.1893 / 0.526, 4)
    big = rows["g4dn.12xlarge"]  # 4 GPUs: $/GPU-hour is a quarter of the instance's
    assert (big["spot_usd"], big["spot_usd_per_gpu"], big["on_demand_usd_per_gpu"]) == (
        [{"zone": "us-east-1c", "usd": 1.5022}], round(1.5022 / 4, 6), round(3.912 / 4, 6))
    assert table["region"] == "us-east-1" and table["on_demand_prices_as_of"]

    text = ok(cli("prices", "--gpu", "t4")).stdout.splitlines()
    assert text[1].split("\t")[:3] == ["type", "gpu", "gpus"]
    assert text[2].split("\t")[6:8] == ["0.1893", "us-east-1d"]
    unknown = cli("prices", "--gpu", "RTX9090")
    assert unknown.exit_code == 2 and "no GPU model 'RTX9090'" in unknown.stderr, unknown


def test_up_spot_takes_the_cheapest_zone_and_status_stop_down_price_it(cli, aws, ec2, fleet):
    aws.set_spot_prices("us-east-1", T4_SPOT)
    up = ok(cli("up", "--spot", "--instance-type", "g4dn.xlarge", "--ssh-cidr", SSH_CIDR, "--no-bootstrap"))
    (launch,) = aws.launch_requests()
    assert launch["Placement.AvailabilityZone"] == "us-east-1d"
    assert (launch["InstanceMarketOptions.MarketType"], launch["InstanceMarketOptions.SpotOptions.SpotInstanceType"],
            launch["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"],
            launch["InstanceInitiatedShutdownBehavior"]) == ("spot", "persistent", "stop", "stop")
    assert "checking the offering and vCPU quota for 1 g4dn.xlarge: done" in up.stderr
    assert "agent on i-" in up.stderr  # spot: the agent watches for interruption notices

    row = json.loads(ok(cli("status", "--json")).stdout)["clusters"][0]["instances"][0]
    assert (row["zone"], row["market"], row["hourly_usd"], row["price_source"]) == (
        "us-east-1d", "spot", 0.1893, "spot price")
    table = ok(cli("status")).stdout.splitlines()
    header = table[0].split("\t")
    assert table[1].split("\t")[header.index("$/h")] == "0.1893"

    stop = ok(cli("stop"))
    assert re.search(rf"session cost of {row['id']} \(g4dn.xlarge spot\): 0h00m at \$0.1893/h \(spot price\): "
                     r"about \$0\.\d+", stop.stderr), stop.stderr
    ok(cli("start"))
    down = ok(cli("down", "--yes"))
    assert f"session cost of {row['id']}" in down.stderr


# the pre-launch quota check (issue 11) --------------------------------------------------------------
def test_up_with_a_short_quota_stops_before_creating_anything(cli, aws, ec2):
    aws.set_quota("Running On-Demand G and VT instances", 0)
    result = cli("up", "--on-demand", "--instance-type", "g4dn.xlarge", "--ssh-cidr", SSH_CIDR, "--no-bootstrap")
    assert result.exit_code == 4 and "Traceback" not in result.stderr, result
    assert "short by 4 vCPUs" in result.stderr and "'Running On-Demand G and VT instances'" in result.stderr
    assert "`awsrun quota request --instance-type g4dn.xlarge --count 1`" in result.stderr
    assert ec2.describe_instances()["Reservations"] == [] and aws.launch_requests() == []
    assert [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("awsrun-")] == []
    assert [k for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("awsrun-")] == []
    assert json.loads(ok(cli("status", "--json")).stdout)["clusters"] == []


def test_up_with_the_default_quota_checks_and_launches(cli, aws, ec2, fleet):
    result = ok(cli("up", "--on-demand", "--instance-type", "g4dn.xlarge", "--ssh-cidr", SSH_CIDR, "--no-bootstrap"))
    assert "checking the offering and vCPU quota for 1 g4dn.xlarge: done" in result.stderr
    assert "warning" not in result.stderr and len(aws.launch_requests()) == 1
    # A second `up` with the cluster complete launches nothing and checks nothing.
    again = ok(cli("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap"))
    assert "vCPU quota" not in again.stderr and len(aws.launch_requests()) == 1
    ok(cli("down", "--yes"))
