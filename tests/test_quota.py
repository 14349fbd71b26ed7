"""awsrun.account.quota: the GPU vCPU quota that governs a launch, increase requests, and the cached pre-launch check.

EC2 (offerings, running instances) is the harness's moto endpoint. Moto's Service Quotas serves only the
`vpc` service (no ec2 quotas, no ListServiceQuotas, no requests or their history), so Service Quotas
answers are injected at the boto3 client boundary with botocore's Stubber, in this process.
"""
from __future__ import annotations

import io
import json
import sys
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import Stubber

from awsrun.account import launch_check, quota, quota_requests
from awsrun.account.quota import Quota, QuotaCheck
from awsrun.errors import AwsrunError
from awsrun.home import Home
from awsrun.providers.aws_clients import AwsClients
from awsrun.providers.aws_errors import TypeNotOffered

UBUNTU = "ami-0ubuntu2204a"
G_ON_DEMAND = "Running On-Demand G and VT instances"
G_SPOT = "All G and VT Spot Instance Requests"
P_ON_DEMAND = "Running On-Demand P instances"
CODES = {G_ON_DEMAND: "L-DB2E81BA", G_SPOT: "L-3819A6DF", P_ON_DEMAND: "L-417A185B"}


def sq_item(name: str, value: float) -> dict:
    return {"ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaCode": CODES[name], "QuotaName": name, "Value": value, "Unit": "None",
            "Adjustable": True, "GlobalQuota": False}


@pytest.fixture
def sq():
    """A Service Quotas client whose answers the test scripts; every scripted answer must be used."""
    client = boto3.client("service-quotas", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def applied(stubber: Stubber, *pages: list[dict]) -> None:
    """Script list_service_quotas(ServiceCode=ec2) as these pages."""
    for number, quotas in enumerate(pages):
        response: dict = {"Quotas": quotas}
        if number < len(pages) - 1:
            response["NextToken"] = f"page-{number + 1}"
        params = {"ServiceCode": "ec2"}
        if number:
            params["NextToken"] = f"page-{number}"
        stubber.add_response("list_service_quotas", response, params)


def defaults(stubber: Stubber, quotas: list[dict]) -> None:
    stubber.add_response("list_aws_default_service_quotas", {"Quotas": quotas}, {"ServiceCode": "ec2"})


def run(ec2, instance_type: str, count: int = 1, spot: bool = False) -> None:
    extra = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    ec2.run_instances(ImageId=UBUNTU, MinCount=count, MaxCount=count, InstanceType=instance_type, **extra)


# ------------------------------------------------------------------------------------ pure builders

def test_request_command_is_exact():
    assert quota.request_command("g4dn.xlarge", 1, False) == \
        "awsrun quota request --instance-type g4dn.xlarge --count 1"
    assert quota.request_command("p3.2xlarge", 2, True, "eu-west-1") == \
        "awsrun quota request --instance-type p3.2xlarge --count 2 --spot --region eu-west-1"
    assert quota.request_command("x; rm -rf ~", 1, False) == \
        "awsrun quota request --instance-type 'x; rm -rf ~' --count 1"


def _check(value: float, usage: int | None, vcpus: int = 4, count: int = 1) -> QuotaCheck:
    return QuotaCheck(instance_type="g4dn.xlarge", spot=False, count=count, region="us-east-1",
                      quota_name=G_ON_DEMAND, vcpus_per_instance=vcpus,
                      quota=Quota(G_ON_DEMAND, CODES[G_ON_DEMAND], value, "applied"), usage=usage)


def test_desired_value_is_max_of_current_and_usage_plus_needed():
    assert quota_requests.desired_value(_check(0, 0)) == 4
    assert quota_requests.desired_value(_check(12, 8, vcpus=4, count=2)) == 16
    assert quota_requests.desired_value(_check(64, 8)) == 64  # never asks for less than it has
    assert quota_requests.desired_value(_check(0, None)) == 4  # usage unknown counts as 0
    assert quota_requests.desired_value(_check(2.5, 0, vcpus=2)) == 3


def test_shortfall_and_ok():
    assert _check(4, 0).ok and _check(4, 0).shortfall == 0
    assert not _check(4, 4).ok and _check(4, 4).shortfall == 4
    assert _check(12, 8, count=2).shortfall == 4


# ------------------------------------------------------------------------- quota paths (by message)

def test_enough_quota(ec2, sq):
    client, stubber = sq
    applied(stubber, [sq_item(G_ON_DEMAND, 8.0)])
    check = quota.check_quota(AwsClients("us-east-1", ec2=ec2, quotas=client), "g4dn.xlarge", count=2)
    assert check.ok
    assert check.summary() == (
        f"g4dn.xlarge x2 (on-demand) needs 8 vCPUs; quota '{G_ON_DEMAND}' (L-DB2E81BA) in us-east-1 is "
        "8 vCPUs, 0 vCPUs in use: enough")


def test_short_quota_counts_running_instances_of_the_family_and_market(ec2, sq):
    run(ec2, "g4dn.2xlarge")             # 8 vCPUs, on-demand G: counts
    run(ec2, "g5.xlarge", spot=True)     # spot: another quota
    run(ec2, "t3.medium")                # Standard family: another quota
    client, stubber = sq
    applied(stubber, [sq_item(G_ON_DEMAND, 12.0)])
    check = quota.check_quota(AwsClients("us-east-1", ec2=ec2, quotas=client), "g4dn.xlarge", count=2)
    assert (check.usage, check.needed, check.shortfall) == (8, 8, 4)
    assert check.summary() == (
        f"g4dn.xlarge x2 (on-demand) needs 8 vCPUs; quota '{G_ON_DEMAND}' (L-DB2E81BA) in us-east-1 is "
        "12 vCPUs, 8 vCPUs in use: short by 4 vCPUs")
    assert check.request_command == "awsrun quota request --instance-type g4dn.xlarge --count 2"


def test_spot_quota_counts_spot_instances_only(ec2, sq):
    run(ec2, "g4dn.2xlarge")
    run(ec2, "g5.xlarge", spot=True)
    client, stubber = sq
    applied(stubber, [sq_item(G_ON_DEMAND, 64.0)], [sq_item(G_SPOT, 4.0)])  # found on the second page
    check = quota.check_quota(AwsClients("us-east-1", ec2=ec2, quotas=client), "g4dn.xlarge", spot=True)
    assert check.quota == Quota(G_SPOT, "L-3819A6DF", 4.0, "applied")
    assert (check.usage, check.shortfall) == (4, 4)
    assert check.request_command == "awsrun quota request --instance-type g4dn.xlarge --count 1 --spot"


def test_default_value_when_the_account_has_no_applied_value(ec2, sq):
    client, stubber = sq
    applied(stubber, [sq_item(P_ON_DEMAND, 32.0)])
    defaults(stubber, [sq_item(G_ON_DEMAND, 0.0)])
    check = quota.check_quota(AwsClients("us-east-1", ec2=ec2, quotas=client), "g4dn.xlarge")
    assert check.quota.source == "default"
    assert "is 0 vCPUs (AWS default), 0 vCPUs in use: short by 4 vCPUs" in check.summary()


def test_unknown_quota(ec2, sq):
    client, stubber = sq
    applied(stubber, [sq_item(P_ON_DEMAND, 32.0)])
    stubber.add_client_error("list_aws_default_service_quotas", "NoSuchResourceException", "no such service",
                             404, expected_params={"ServiceCode": "ec2"})
    check = quota.check_quota(AwsClients("us-east-1", ec2=ec2, quotas=client), "g4dn.xlarge")
    assert not check.known and not check.ok and check.shortfall is None
    assert check.problem == f"no quota named '{G_ON_DEMAND}' found in Service Quotas for ec2 in us-east-1"
    assert G_ON_DEMAND in check.fix


def test_access_denied_to_service_quotas(ec2, sq):
    client, stubber = sq
    stubber.add_client_error("list_service_quotas", "AccessDeniedException", "not authorized", 403,
                             expected_params={"ServiceCode": "ec2"})
    check = quota.check_quota(AwsClients("us-east-1", ec2=ec2, quotas=client), "g4dn.xlarge")
    assert check.problem == "access denied to Service Quotas ListServiceQuotas (AccessDeniedException)"
    assert check.fix == "grant the IAM action servicequotas:ListServiceQuotas to this identity"


def test_expired_token_is_named(ec2, sq):
    client, stubber = sq
    stubber.add_client_error("list_service_quotas", "ExpiredTokenException", "The security token included in "
                             "the request is expired", 403, expected_params={"ServiceCode": "ec2"})
    check = quota.check_quota(AwsClients("us-east-1", ec2=ec2, quotas=client), "g4dn.xlarge")
    assert check.problem == "your AWS session token has expired (ExpiredTokenException)"
    assert "aws sso login" in check.fix


def test_usage_unknown_is_said(sq):
    client, stubber = sq
    applied(stubber, [sq_item(G_ON_DEMAND, 8.0)])
    ec2 = boto3.client("ec2", region_name="us-east-1")
    with Stubber(ec2) as ec2_stub:
        ec2_stub.add_client_error("describe_instances", "UnauthorizedOperation", "no", 403)
        check = quota.check_quota(AwsClients("us-east-1", ec2=ec2, quotas=client), "g4dn.xlarge")
    assert check.ok and check.usage is None
    assert "usage unknown (ec2:DescribeInstances denied): enough" in check.summary()


def test_type_without_a_quota_family_is_unknown_without_any_call():
    check = quota.check_quota(AwsClients("us-east-1", ec2=object(), quotas=object()), "nosuch.type")
    assert check.problem.startswith("no vCPU quota known for nosuch.type")


# ------------------------------------------------------------------------------ requests and history

def test_request_increase_asks_for_usage_plus_needed(ec2, sq):
    run(ec2, "g4dn.2xlarge")
    client, stubber = sq
    applied(stubber, [sq_item(G_ON_DEMAND, 12.0)])
    clients = AwsClients("us-east-1", ec2=ec2, quotas=client)
    check = quota.assess(clients, "g4dn.xlarge", count=2)
    stubber.add_response(
        "request_service_quota_increase",
        {"RequestedQuota": {"Id": "req-1", "QuotaCode": "L-DB2E81BA", "QuotaName": G_ON_DEMAND,
                            "DesiredValue": 16.0, "Status": "PENDING",
                            "Created": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)}},
        {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA", "DesiredValue": 16.0})
    filed = quota_requests.request_increase(clients, check)
    assert filed == quota_requests.QuotaRequest(id="req-1", quota_name=G_ON_DEMAND, quota_code="L-DB2E81BA", desired=16.0,
                                                status="PENDING", created="2026-01-02T03:04:05+00:00", region="us-east-1")


def test_request_already_open(sq):
    client, stubber = sq
    stubber.add_client_error("request_service_quota_increase", "ResourceAlreadyExistsException", "exists", 400)
    with pytest.raises(AwsrunError) as caught:
        quota_requests.request_increase(AwsClients("us-east-1", quotas=client), _check(0, 0))
    assert caught.value.message == f"a request to raise '{G_ON_DEMAND}' is already open in us-east-1"
    assert "awsrun quota status" in caught.value.hint


def test_request_denied_names_the_iam_action(sq):
    client, stubber = sq
    stubber.add_client_error("request_service_quota_increase", "AccessDeniedException", "no", 403)
    with pytest.raises(AwsrunError) as caught:
        quota_requests.request_increase(AwsClients("us-east-1", quotas=client), _check(0, 0))
    assert caught.value.hint == "grant the IAM action servicequotas:RequestServiceQuotaIncrease to this identity"


def test_nothing_to_request_when_the_quota_is_enough():
    with pytest.raises(quota_requests.NothingToRequest, match="nothing to request: .*enough"):
        quota_requests.request_increase(AwsClients("us-east-1", quotas=object()), _check(8, 0))


def _history_item(rid: str, status: str, day: int) -> dict:
    return {"Id": rid, "CaseId": f"case-{rid}", "ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA",
            "QuotaName": G_ON_DEMAND, "DesiredValue": 8.0, "Status": status,
            "Created": datetime(2026, 1, day, tzinfo=timezone.utc),
            "LastUpdated": datetime(2026, 1, day, 1, tzinfo=timezone.utc)}


def test_request_status_lists_every_request_newest_first(sq):
    client, stubber = sq
    stubber.add_response("list_requested_service_quota_change_history",
                         {"RequestedQuotas": [_history_item("a", "APPROVED", 1)], "NextToken": "n"},
                         {"ServiceCode": "ec2"})
    stubber.add_response("list_requested_service_quota_change_history",
                         {"RequestedQuotas": [_history_item("b", "CASE_OPENED", 3)]},
                         {"ServiceCode": "ec2", "NextToken": "n"})
    requests = quota_requests.request_status(AwsClients("us-east-1", quotas=client))
    assert [(r.id, r.status, r.case_id) for r in requests] == [("b", "CASE_OPENED", "case-b"),
                                                              ("a", "APPROVED", "case-a")]


def test_request_status_of_one_quota(sq):
    client, stubber = sq
    stubber.add_response("list_requested_service_quota_change_history_by_quota",
                         {"RequestedQuotas": [_history_item("c", "PENDING", 2)]},
                         {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"})
    requests = quota_requests.request_status(AwsClients("us-east-1", quotas=client), "L-DB2E81BA")
    assert [r.status for r in requests] == ["PENDING"]


# ---------------------------------------------------------------------------- the pre-launch check

class NoCalls(AwsClients):
    def get(self, name):
        raise AssertionError(f"the {name} API was called; the cache should have answered")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_launch_check_passes_then_answers_from_the_cache(ec2, sq, tmp_path):
    home, clock = Home(tmp_path / "home"), Clock()
    client, stubber = sq
    applied(stubber, [sq_item(G_ON_DEMAND, 8.0)])
    result = launch_check.check_launch_quota("g4dn.xlarge", home=home, clients=AwsClients("us-east-1", ec2=ec2, quotas=client),
                                             clock=clock)
    assert result.zones == ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f")
    assert result.quota.ok and not result.cached and result.warnings == ()
    assert (home.root / "cache" / "preflight.json").stat().st_mode & 0o777 == 0o600

    clock.now += 599
    again = launch_check.check_launch_quota("g4dn.xlarge", home=home, clients=NoCalls("us-east-1"), clock=clock)
    assert again.cached and again.quota == result.quota and again.zones == result.zones

    clock.now += 2  # older than max_age_s: asks again
    applied(stubber, [sq_item(G_ON_DEMAND, 8.0)])
    fresh = launch_check.check_launch_quota("g4dn.xlarge", home=home, clients=AwsClients("us-east-1", ec2=ec2, quotas=client),
                                            clock=clock)
    assert not fresh.cached


def test_launch_check_refuses_a_short_quota_with_the_exact_command(ec2, sq, tmp_path):
    home = Home(tmp_path / "home")
    client, stubber = sq
    applied(stubber, [sq_item(G_ON_DEMAND, 0.0)])
    with pytest.raises(quota.QuotaTooLow) as caught:
        launch_check.check_launch_quota("g4dn.xlarge", home=home, count=1,
                                        clients=AwsClients("us-east-1", ec2=ec2, quotas=client))
    assert caught.value.message.endswith("is 0 vCPUs, 0 vCPUs in use: short by 4 vCPUs")
    assert "`awsrun quota request --instance-type g4dn.xlarge --count 1`" in caught.value.hint
    assert caught.value.exit_code == 4
    # a refusal is never cached: the next check asks again (and finds the approved increase)
    applied(stubber, [sq_item(G_ON_DEMAND, 4.0)])
    assert launch_check.check_launch_quota("g4dn.xlarge", home=home,
                                           clients=AwsClients("us-east-1", ec2=ec2, quotas=client)).quota.ok


def test_launch_check_does_not_block_on_an_unreadable_quota(ec2, sq, tmp_path):
    home = Home(tmp_path / "home")
    client, stubber = sq
    stubber.add_client_error("list_service_quotas", "AccessDeniedException", "no", 403)
    result = launch_check.check_launch_quota("g4dn.xlarge", home=home, clients=AwsClients("us-east-1", ec2=ec2, quotas=client))
    assert result.warnings == ("could not check the vCPU quota: access denied to Service Quotas ListServiceQuotas "
                               "(AccessDeniedException)",)
    assert not (home.root / "cache" / "preflight.json").exists()


def test_launch_check_refuses_a_type_not_offered(aws, tmp_path):
    ec2_eu = boto3.client("ec2", region_name="eu-west-1", endpoint_url=aws.url)
    with pytest.raises(TypeNotOffered) as caught:
        launch_check.check_launch_quota("p5.48xlarge", home=Home(tmp_path), region="eu-west-1",
                                        clients=AwsClients("eu-west-1", ec2=ec2_eu, quotas=object()))
    assert caught.value.message == "p5.48xlarge is not offered in eu-west-1"


def test_launch_check_refuses_a_zone_without_the_type(ec2, tmp_path):
    with pytest.raises(TypeNotOffered) as caught:
        launch_check.check_launch_quota("g4dn.xlarge", home=Home(tmp_path), zone="us-east-1e",
                                        clients=AwsClients("us-east-1", ec2=ec2, quotas=object()))
    assert caught.value.message == "g4dn.xlarge is not offered in zone us-east-1e"
    assert caught.value.hint.startswith("offered in us-east-1a, us-east-1b, us-east-1c, us-east-1d, us-east-1f")


def test_launch_check_survives_a_corrupt_cache(ec2, sq, tmp_path):
    home = Home(tmp_path / "home")
    (home.root / "cache").mkdir(parents=True)
    (home.root / "cache" / "preflight.json").write_text("{not json")
    client, stubber = sq
    applied(stubber, [sq_item(G_ON_DEMAND, 8.0)])
    assert launch_check.check_launch_quota("g4dn.xlarge", home=home,
                                           clients=AwsClients("us-east-1", ec2=ec2, quotas=client)).quota.ok
    assert "us-east-1|g4dn.xlarge|on-demand|1" in json.loads((home.root / "cache" / "preflight.json").read_text())


# ------------------------------------------------------------------- `awsrun quota request` (in-process)

@pytest.fixture
def quota_cli(sq, ec2, tmp_path, monkeypatch):
    """awsrun's main() in this process, its clients replaced by the moto EC2 and the stubbed Service Quotas."""
    from awsrun.cli import doctor as cli_doctor
    from awsrun.cli import main

    client, stubber = sq
    from awsrun.providers import aws_clients

    monkeypatch.setattr(aws_clients, "AwsClients", lambda region: AwsClients(region, ec2=ec2, quotas=client))
    monkeypatch.setenv("AWSRUN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, tty: bool = False, stdin: str = "") -> int:
        monkeypatch.setattr(cli_doctor, "_can_ask", lambda: tty)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as done:
            main(list(args))
        return done.value.code

    return invoke, stubber


def test_quota_request_without_a_terminal_or_yes_refuses(quota_cli, capsys):
    invoke, stubber = quota_cli
    applied(stubber, [sq_item(G_ON_DEMAND, 0.0)])
    assert invoke("quota", "request", "--instance-type", "g4dn.xlarge") == 2
    err = capsys.readouterr().err
    assert "error: not filing a quota increase request without confirmation: no terminal to ask on" in err
    assert "hint: add --yes to file it: awsrun quota request --instance-type g4dn.xlarge --count 1 --yes" in err


def test_quota_request_declined_files_nothing(quota_cli, capsys):
    invoke, stubber = quota_cli
    applied(stubber, [sq_item(G_ON_DEMAND, 0.0)])
    assert invoke("quota", "request", "-t", "g4dn.xlarge", tty=True, stdin="n\n") == 1
    err = capsys.readouterr().err
    assert f"Request raising '{G_ON_DEMAND}' (L-DB2E81BA) in us-east-1 from 0 to 4 vCPUs?" in err
    assert "nothing requested" in err


def test_quota_request_with_yes_files_it(quota_cli, capsys):
    invoke, stubber = quota_cli
    applied(stubber, [sq_item(G_SPOT, 0.0)])
    stubber.add_response(
        "request_service_quota_increase",
        {"RequestedQuota": {"Id": "req-9", "QuotaCode": "L-3819A6DF", "QuotaName": G_SPOT, "DesiredValue": 8.0,
                            "Status": "PENDING"}},
        {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF", "DesiredValue": 8.0})
    assert invoke("quota", "request", "-t", "g4dn.xlarge", "--count", "2", "--spot", "--yes") == 0
    out = capsys.readouterr().out
    assert out.strip() == f"requested {G_SPOT} -> 8 vCPUs in us-east-1: request req-9, status PENDING"


def test_quota_request_when_enough_files_nothing(quota_cli, capsys):
    invoke, stubber = quota_cli
    applied(stubber, [sq_item(G_ON_DEMAND, 8.0)])
    assert invoke("quota", "request", "-t", "g4dn.xlarge", "--yes") == 0
    assert "nothing to request: " in capsys.readouterr().err


def test_quota_status_lists_requests(quota_cli, capsys):
    invoke, stubber = quota_cli
    stubber.add_response("list_requested_service_quota_change_history",
                         {"RequestedQuotas": [_history_item("a", "DENIED", 1)]}, {"ServiceCode": "ec2"})
    assert invoke("quota", "status", "--json") == 0
    [item] = json.loads(capsys.readouterr().out)
    assert (item["id"], item["status"], item["quota_name"], item["desired"]) == ("a", "DENIED", G_ON_DEMAND, 8.0)
