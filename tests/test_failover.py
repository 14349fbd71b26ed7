"""`up` when EC2 says no: candidates in order (types, GPU model, regions), EC2's refusals sorted (capacity:
next zone; quota: skip the region's family and name the fix; anything else: stop), nothing launched twice,
`--dry-run`, `--retry-until-up`, and a kill at each phase of a failover leaving nothing unseen.

EC2's refusals are injected into the moto endpoint per region, zone, type and market
(`aws.fail_launches`): moto never produces them itself.
"""
from __future__ import annotations

import subprocess

import boto3
import pytest

from awsrun.cluster import failover, up
from awsrun.cluster.context import UpRequest
from awsrun.errors import ConfigError
from awsrun.home import Home
from awsrun.progress import Silent
from awsrun.providers.aws_errors import AccessDeniedError, CapacityError
from awsrun.settings import Settings
from awsrun.state import State
from tests.harness.cli import wait_for_pause
from tests.test_up_e2e import ok, status_ids, status_json

CIDR = "203.0.113.7/32"
G_ON_DEMAND = "Running On-Demand G and VT instances"


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home").ensure()


def settings(**changes) -> Settings:
    return Settings(**{"ssh_cidr": CIDR, "caller_ip_url": "off", "ssh_timeout": 20.0, **changes})


def run_up(home: Home, fleet=None, retry: failover.Retry | None = None, **changes):
    if fleet is not None:
        changes["ssh_proxy_command"] = fleet.proxy_command
    request = UpRequest(settings(**changes), bootstrap=False, retry=retry)
    return up.up(home, request, Silent())


def ec2_in(aws, region: str):
    return boto3.client("ec2", region_name=region, endpoint_url=aws.url)


def live(client) -> list[dict]:
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    return [i for r in client.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def ours(client) -> tuple[list[str], list[str]]:
    groups = [g["GroupName"] for g in client.describe_security_groups()["SecurityGroups"]
              if g["GroupName"].startswith("awsrun-")]
    keys = [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("awsrun-")]
    return groups, keys


def tried(aws) -> list[tuple[str, str | None, str]]:
    """(type, zone asked for, market) of every RunInstances moto saw, refused or not, in order."""
    return [(r["InstanceType"], r.get("Placement.AvailabilityZone"), r.get("InstanceMarketOptions.MarketType",
                                                                              "on-demand"))
            for r in aws.launch_requests()]


# candidates: pure ------------------------------------------------------------------------------------
def test_candidates_are_regions_in_order_then_types_in_order():
    chosen = failover.candidates(Settings(instance_type="g5.xlarge,g4dn.xlarge", regions="us-west-2,us-east-1"))
    assert chosen == [failover.Candidate("us-west-2", "g5.xlarge"), failover.Candidate("us-west-2", "g4dn.xlarge"),
                      failover.Candidate("us-east-1", "g5.xlarge"), failover.Candidate("us-east-1", "g4dn.xlarge")]


def test_gpu_model_means_its_catalog_types_cheapest_first_after_the_given_ones():
    assert failover.candidate_types(Settings(gpu="t4", region="us-east-1")) == \
        ["g4dn.xlarge", "g4dn.2xlarge", "g4dn.12xlarge"]
    # a given type with that GPU keeps its place in front; one without it is left out
    assert failover.candidate_types(Settings(instance_type="g5.xlarge,g4dn.2xlarge", gpu="T4")) == \
        ["g4dn.2xlarge", "g4dn.xlarge", "g4dn.12xlarge"]


def test_unknown_gpu_model_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError) as raised:
        failover.candidate_types(Settings(gpu="Z9000"))
    assert "no GPU model 'Z9000'" in raised.value.message and "A10G" in raised.value.hint


# capacity ------------------------------------------------------------------------------------------------
def test_no_capacity_for_the_first_type_anywhere_moves_on_to_the_next_type(aws, ec2, home, fleet):
    aws.fail_launches("InsufficientInstanceCapacity", region="us-east-1", instance_type="g4dn.xlarge")
    result = run_up(home, fleet, region="us-east-1", instance_type="g4dn.xlarge,g5.xlarge")

    (instance,) = live(ec2)
    assert instance["InstanceType"] == "g5.xlarge" and result.launched == (instance["InstanceId"],)
    zones = [None, "us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f"]
    assert tried(aws) == [("g4dn.xlarge", z, "on-demand") for z in zones] + [("g5.xlarge", None, "on-demand")]
    assert [(a.instance_type, a.zone, a.outcome) for a in result.attempts] == \
        [("g4dn.xlarge", z or "EC2's choice", "no capacity") for z in zones] + \
        [("g5.xlarge", "us-east-1a", "launched")]


def test_spot_tries_the_cheapest_zone_first_and_a_full_zone_costs_one_try(aws, ec2, home, fleet):
    aws.set_spot_prices("us-east-1", {("g4dn.xlarge", "us-east-1a"): 0.30, ("g4dn.xlarge", "us-east-1b"): 0.20,
                                      ("g4dn.xlarge", "us-east-1c"): 0.25})
    aws.fail_launches("InsufficientInstanceCapacity", zone="us-east-1b", market="spot")
    run_up(home, fleet, region="us-east-1", spot=True)
    (instance,) = live(ec2)
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1c"
    assert tried(aws) == [("g4dn.xlarge", "us-east-1b", "spot"), ("g4dn.xlarge", "us-east-1c", "spot")]


def test_spot_zones_follow_ec2s_placement_scores_where_the_identity_may_read_them(aws, ec2, home, fleet):
    aws.set_spot_prices("us-east-1", {("g4dn.xlarge", "us-east-1a"): 0.30, ("g4dn.xlarge", "us-east-1b"): 0.20,
                                      ("g4dn.xlarge", "us-east-1c"): 0.25})
    aws.set_spot_placement_scores("us-east-1", {"us-east-1a": 9, "us-east-1b": 3, "us-east-1c": 9})
    aws.fail_launches("InsufficientInstanceCapacity", zone="us-east-1c", market="spot")
    run_up(home, fleet, region="us-east-1", spot=True)
    # 9, 9 (the cheaper first), then 3
    assert tried(aws) == [("g4dn.xlarge", "us-east-1c", "spot"), ("g4dn.xlarge", "us-east-1a", "spot")]


def test_placement_scores_builder_and_parser():
    from awsrun.providers import aws_requests as req

    assert req.spot_placement_scores_request("g5.xlarge", "us-west-2") == {
        "InstanceTypes": ["g5.xlarge"], "TargetCapacity": 1, "TargetCapacityUnitType": "units",
        "SingleAvailabilityZone": True, "RegionNames": ["us-west-2"]}
    entries = [{"AvailabilityZoneId": "usw2-az1", "Score": 7}, {"AvailabilityZoneId": "usw2-az9", "Score": 1},
               {"Region": "us-west-2", "Score": 5}]
    assert req.scores_by_zone(entries, {"usw2-az1": "us-west-2a"}) == {"us-west-2a": 7}


def test_a_full_region_falls_over_to_the_next_region_and_leaves_nothing_behind(aws, home, fleet):
    aws.fail_launches("InsufficientInstanceCapacity", region="us-east-1")
    result = run_up(home, fleet, regions="us-east-1,us-west-2")
    east, west = ec2_in(aws, "us-east-1"), ec2_in(aws, "us-west-2")
    assert live(east) == [] and ours(east) == ([], [])   # the failed region's group and key pair are gone
    (instance,) = live(west)
    assert result.cluster.region == "us-west-2" and result.launched == (instance["InstanceId"],)
    assert len(ours(west)[0]) == 1 and len(ours(west)[1]) == 1
    state = State.open(home.state_db)
    try:
        assert state.get_cluster("default").region == "us-west-2"
        assert [r.id for r in state.instances("default")] == [instance["InstanceId"]]
    finally:
        state.close()


def test_several_nodes_fall_over_as_a_whole_and_stay_in_one_zone(aws, ec2, home, fleet):
    aws.serve_placement_groups()
    # the first g4dn.xlarge launches, every later one is refused: node 1 cannot join node 0
    aws.fail_launches("InsufficientInstanceCapacity", instance_type="g4dn.xlarge", after=1)
    request = UpRequest(settings(region="us-east-1", instance_type="g4dn.xlarge,g5.xlarge",
                                 ssh_proxy_command=fleet.proxy_command), nodes=2, bootstrap=False)
    result = up.up(home, request, Silent())
    nodes = live(ec2)
    assert sorted(i["InstanceType"] for i in nodes) == ["g5.xlarge", "g5.xlarge"]
    assert len({i["Placement"]["AvailabilityZone"] for i in nodes}) == 1
    assert sorted(result.launched) == sorted(i["InstanceId"] for i in nodes)
    first = [r for r in tried(aws) if r[0] == "g4dn.xlarge"]
    assert len(first) == 2  # node 0's launch, node 1's refusal in its zone; then g5.xlarge for both
    assert [i["State"]["Name"] for r in ec2.describe_instances(Filters=[
        {"Name": "instance-type", "Values": ["g4dn.xlarge"]}])["Reservations"] for i in r["Instances"]] == \
        ["terminated"]


# quota ------------------------------------------------------------------------------------------------------
def test_a_quota_refusal_skips_the_family_in_that_region_and_names_the_quota(aws, home, fleet):
    aws.fail_launches("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit",
                      region="us-east-1", instance_type="g4dn.xlarge")
    result = run_up(home, fleet, regions="us-east-1,us-west-2", instance_type="g4dn.xlarge,g5.xlarge")
    # g5.xlarge is a G type too: the same quota, so us-east-1 is not asked again
    assert tried(aws) == [("g4dn.xlarge", None, "on-demand"), ("g4dn.xlarge", None, "on-demand")]
    assert [(a.region, a.instance_type, a.outcome) for a in result.attempts] == [
        ("us-east-1", "g4dn.xlarge", "quota"), ("us-east-1", "g5.xlarge", "skipped"),
        ("us-west-2", "g4dn.xlarge", "launched")]
    assert len(live(ec2_in(aws, "us-west-2"))) == 1


def test_a_quota_shortfall_found_before_launch_launches_nothing_and_gives_code_and_amount(aws, home):
    aws.set_quota(G_ON_DEMAND, 0)
    with pytest.raises(failover.NoCapacity) as raised:
        run_up(home, regions="us-east-1,us-west-2")
    assert aws.launch_requests() == []
    hint = raised.value.hint
    assert "quota L-DB2E81BA (Running On-Demand G and VT instances) in us-east-1, 4 vCPUs for 1 g4dn.xlarge: " \
           "`awsrun quota request --instance-type g4dn.xlarge --count 1 --region us-east-1`" in hint
    assert "--region us-west-2`" in hint
    for region in ("us-east-1", "us-west-2"):
        assert ours(ec2_in(aws, region)) == ([], [])


# anything else stops at once -----------------------------------------------------------------------------
def test_a_permission_error_stops_at_once_without_trying_other_candidates(aws, ec2, home):
    aws.fail_launches("UnauthorizedOperation", "You are not authorized to perform this operation.")
    with pytest.raises(AccessDeniedError):
        run_up(home, regions="us-east-1,us-west-2", instance_type="g4dn.xlarge,g5.xlarge")
    assert len(aws.launch_requests()) == 1
    assert live(ec2) == [] and live(ec2_in(aws, "us-west-2")) == []


def test_nothing_anywhere_says_what_was_tried_and_how_to_widen(aws, home):
    aws.fail_launches("InsufficientInstanceCapacity")
    with pytest.raises(failover.NoCapacity) as raised:
        run_up(home, region="us-east-1", instance_type="g4dn.xlarge,g5.xlarge", zone="us-east-1b")
    assert raised.value.message.startswith("no candidate could launch (2 tried); last: AWS has no on-demand "
                                           "capacity for g5.xlarge in us-east-1b")
    assert "--retry-until-up" in raised.value.hint and "--gpu" in raised.value.hint
    assert [(a.instance_type, a.outcome) for a in raised.value.attempts] == \
        [("g4dn.xlarge", "no capacity"), ("g5.xlarge", "no capacity")]


def test_one_candidate_keeps_ec2s_own_error(aws, home):
    aws.fail_launches("InsufficientInstanceCapacity")
    with pytest.raises(CapacityError) as raised:
        run_up(home, region="us-east-1", zone="us-east-1b")
    assert raised.value.message.startswith("AWS has no on-demand capacity for g4dn.xlarge in us-east-1b")
    assert [a.outcome for a in raised.value.attempts] == ["no capacity"]


# retry ------------------------------------------------------------------------------------------------------
def test_retry_until_up_goes_round_again_until_capacity_returns(aws, ec2, home, fleet):
    aws.fail_launches("InsufficientInstanceCapacity", zone="us-east-1b", times=3)
    result = run_up(home, fleet, retry=failover.Retry(backoff_s=0.001), region="us-east-1", zone="us-east-1b")
    (instance,) = live(ec2)
    assert result.launched == (instance["InstanceId"],)
    assert [a.outcome for a in result.attempts] == ["no capacity"] * 3 + ["launched"]
    assert len(aws.launch_requests()) == 4  # one per round: no instance launched twice


def test_retry_never_waits_for_a_quota(aws, home):
    aws.set_quota(G_ON_DEMAND, 0)
    with pytest.raises(failover.NoCapacity):
        run_up(home, retry=failover.Retry(backoff_s=0.001), regions="us-east-1,us-west-2")
    assert aws.launch_requests() == []


def test_retry_for_gives_up_at_its_bound():
    rounds = []
    walk = failover.Failover(Settings(region="us-east-1"), 1, Silent(), sleep=lambda s: None,
                             clock=lambda: float(len(rounds)))

    def full(candidate):
        rounds.append(candidate)
        raise failover.CapacityError("no capacity")

    with pytest.raises(failover.NoCapacity) as raised:
        walk.run(full, failover.Retry(until=3.0, backoff_s=1.0))
    assert len(rounds) == 3 and "in 3 rounds" in raised.value.message


# the CLI --------------------------------------------------------------------------------------------------
def test_dry_run_lists_candidates_in_order_with_price_and_headroom_and_launches_nothing(cli, aws):
    aws.set_quota(G_ON_DEMAND, 8)
    result = ok(cli("up", "--dry-run", "--ssh-cidr", CIDR, "--instance-type", "g5.xlarge,g4dn.xlarge",
                    "--region", "us-east-1,us-west-2"))
    rows = [line.split("\t") for line in result.stdout.splitlines()[2:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [("us-east-1", "g5.xlarge", "on-demand"),
                                                  ("us-east-1", "g4dn.xlarge", "on-demand"),
                                                  ("us-west-2", "g5.xlarge", "on-demand"),
                                                  ("us-west-2", "g4dn.xlarge", "on-demand")]
    assert [(r[5], r[6], r[7], r[8]) for r in rows[:2]] == [("1.006", "L-DB2E81BA", "8", "4"),
                                                             ("0.526", "L-DB2E81BA", "8", "4")]
    assert rows[0][4].startswith("EC2's choice,us-east-1a,")
    assert aws.launch_requests() == []
    assert ours(ec2_in(aws, "us-east-1")) == ([], [])


@pytest.mark.parametrize("flags, error", [
    (["--cluster", "-x"], "error: cluster name '-x' cannot be used"),
    (["--retry-for", "abc"], "error: --retry-for 'abc' is not a duration"),
    (["--autostop", "bogus"], "error: autostop 'bogus' is not a duration: use e.g. 30m, 2h, 90s, or off"),
    (["--autostop-down"], "error: --autostop-down needs an autostop duration"),
    (["--ssh-cidr", "10.0.0.0/33"], "error: "),
])
def test_dry_run_refuses_what_up_refuses_before_showing_a_plan(cli, aws, flags, error):
    args = ["up", "--dry-run", *(["--ssh-cidr", CIDR] if "--ssh-cidr" not in flags else []), *flags]
    result = cli(*args)
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result
    assert result.stderr.startswith(error) and result.stdout == "", result
    assert aws.launch_requests() == []


def test_up_prints_what_it_tried(cli, aws, ec2, fleet):
    aws.fail_launches("InsufficientInstanceCapacity", region="us-east-1", instance_type="g4dn.xlarge")
    result = ok(cli("up", "--ssh-cidr", CIDR, "--no-bootstrap", "--instance-type", "g4dn.xlarge,g5.xlarge",
                    "--retry-for", "5m", env={"AWSRUN_RETRY_BACKOFF": "0.01"}))
    table = result.stdout.split("# what up tried, in order\n", 1)[1].splitlines()
    assert table[0].split("\t") == ["region", "type", "market", "zone", "outcome", "why"]
    assert table[-1].split("\t")[:5] == ["us-east-1", "g5.xlarge", "on-demand", "us-east-1a", "launched"]
    assert all(line.split("\t")[4] == "no capacity" for line in table[1:-1]) and len(table) == 8
    ok(cli("down", "--yes"))


def test_bad_retry_for_is_a_one_line_error(cli):
    result = cli("up", "--retry-for", "soon")
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert "error: --retry-for 'soon' is not a duration" in result.stderr


def start_paused(cli, phase: str, *args: str) -> subprocess.Popen:
    process = subprocess.Popen(cli.argv("up", "--ssh-cidr", CIDR, "--no-bootstrap", *args), cwd=cli.cwd,
                               env=cli.environment({"AWSRUN_TEST_PAUSE_AT": phase}),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_pause(process, phase)
    return process


# g4dn.xlarge on demand in us-east-1: EC2's choice, then its 5 zones; the 7th launch is the first in us-west-2
@pytest.mark.parametrize("phase", ["before-launch#1", "before-launch#6", "moving-region", "before-launch#7",
                                   "run-instances"])
def test_a_kill_at_each_phase_of_a_failover_leaves_nothing_unseen(cli, aws, fleet, phase):
    aws.fail_launches("InsufficientInstanceCapacity", region="us-east-1")
    east, west = ec2_in(aws, "us-east-1"), ec2_in(aws, "us-west-2")
    process = start_paused(cli, phase, "--region", "us-east-1,us-west-2")
    process.kill()
    process.wait(timeout=30)
    launched = {i["InstanceId"] for i in live(east) + live(west)}
    assert len(launched) == (1 if phase == "run-instances" else 0)
    assert launched <= status_ids(status_json(cli))
    ok(cli("down", "--yes"))
    for client in (east, west):
        assert live(client) == [] and ours(client) == ([], [])


def test_doctor_shows_the_quota_headroom_of_every_candidate(cli, aws):
    aws.set_quota("Running On-Demand P instances", 0)
    result = cli("doctor", "--json", "--instance-type", "g4dn.xlarge,p3.2xlarge", "--region", "us-east-1,us-west-2",
                 env={"AWS_REGION": "us-east-1"})
    import json

    check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "candidates")
    rows = [(r["region"], r["instance_type"], r["headroom_vcpus"], r["needed_vcpus"], r["fits"])
            for r in check["data"]["candidates"]]
    assert rows == [("us-east-1", "g4dn.xlarge", 512.0, 4, True), ("us-east-1", "p3.2xlarge", 0.0, 8, False),
                    ("us-west-2", "g4dn.xlarge", 512.0, 4, True), ("us-west-2", "p3.2xlarge", 0.0, 8, False)]
    assert check["ok"] and check["warning"]
    assert "`awsrun quota request --instance-type p3.2xlarge --count 1 --region us-west-2`" in check["fix"]


def test_settings_take_ordered_lists_and_refuse_a_bad_member(tmp_path):
    from awsrun.settings import load_settings

    loaded = load_settings(tmp_path, {"AWSRUN_REGIONS": "us-west-2, eu-west-1"}, {"instance_type": "g5.xlarge, g6.xlarge"})
    assert failover.candidates(loaded)[:2] == [failover.Candidate("us-west-2", "g5.xlarge"),
                                              failover.Candidate("us-west-2", "g6.xlarge")]
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path, {}, {"regions": "us-east-1,mars"})
    assert raised.value.message == "--regions: 'mars' is not an AWS region (like us-east-1)"
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path, {}, {"instance_type": "g5.xlarge,rm -rf"})
    assert "'rm -rf' is not an EC2 instance type" in raised.value.message


def test_a_quota_refusal_in_the_chains_region_skips_the_family_there_too(aws, home, fleet):
    aws.fail_launches("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit")
    with pytest.raises(failover.NoCapacity) as raised:
        run_up(home, instance_type="g4dn.xlarge,g5.xlarge,c5.large")  # no region given: boto3's chain's
    assert [(a.instance_type, a.outcome) for a in raised.value.attempts] == [
        ("g4dn.xlarge", "quota"), ("g5.xlarge", "skipped"), ("c5.large", "quota")]
    assert len(aws.launch_requests()) == 2
