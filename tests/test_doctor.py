"""`awsrun doctor`: each check as a plain function, the whole run in-process, and the real CLI against moto.

STS and EC2 are the harness's moto endpoint. Moto has no EC2 quotas in Service Quotas, so in-process
checks get their Service Quotas answers from botocore's Stubber; the CLI runs show what moto serves.
"""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from awsrun.account import doctor
from awsrun.account.doctor import CHECK_NAMES, Check
from awsrun.account.quota import Quota, QuotaCheck
from awsrun.home import Home
from awsrun.providers.aws_clients import AwsClients

G_ON_DEMAND = "Running On-Demand G and VT instances"
ALL_TOOLS = {"ssh": "/usr/bin/ssh", "rsync": "/usr/bin/rsync", "tmux": "/usr/bin/tmux"}


# ------------------------------------------------------------------------------------------- checks

def test_endpoint_is_said_loudly_when_set():
    quiet = doctor.check_endpoint({})
    assert quiet == Check("endpoint", True, "AWS's own endpoints (AWS_ENDPOINT_URL not set)")
    loud = doctor.check_endpoint({"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_ENDPOINT_URL_STS": "",
                                  "AWS_ENDPOINT_URL_EC2": "http://127.0.0.1:6000"})
    assert loud.ok and loud.warning
    assert loud.detail == ("WARNING: AWS_ENDPOINT_URL=http://127.0.0.1:5000, AWS_ENDPOINT_URL_EC2=http://127.0.0.1:6000: "
                           "AWS calls go to this endpoint (an emulator?), not to AWS")
    assert loud.fix == "unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_EC2 to talk to AWS"


def test_credentials_show_account_and_arn(aws):
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=aws.url)
    check = doctor.check_credentials(sts)
    assert check.ok
    assert check.detail == "account 123456789012 as arn:aws:sts::123456789012:user/moto"


@pytest.mark.parametrize("code", ["ExpiredToken", "ExpiredTokenException"])
def test_expired_token_is_named(code):
    sts = boto3.client("sts", region_name="us-east-1")
    with Stubber(sts) as stubber:
        stubber.add_client_error("get_caller_identity", code, "The security token included in the request is "
                                 "expired", 403)
        check = doctor.check_credentials(sts)
    assert not check.ok
    assert check.detail == f"your AWS session token has expired ({code})"
    assert "aws sso login" in check.fix


def test_no_credentials_says_how_to_configure(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    sts = boto3.session.Session().client("sts", region_name="us-east-1")  # raises before any request is sent
    check = doctor.check_credentials(sts)
    assert (check.ok, check.detail) == (False, "no AWS credentials found")
    assert "aws configure" in check.fix and check.data == {"error": "NoCredentialsError"}


def test_region_missing_names_the_fix():
    assert doctor.check_region("eu-west-1", "--region").detail == "eu-west-1 (from --region)"
    missing = doctor.check_region(None, "AWS_REGION")
    assert (missing.ok, missing.detail) == (False, "no AWS region set")
    assert "--region" in missing.fix and "AWS_REGION" in missing.fix


def test_offering_lists_zones(ec2):
    check = doctor.check_offering(ec2, "g4dn.xlarge", "us-east-1")
    assert check.ok
    assert check.detail == "g4dn.xlarge offered in 5 zones: us-east-1a, us-east-1b, us-east-1c, us-east-1d, us-east-1f"
    assert check.data["zones"] == ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f"]


def test_offering_missing_in_region(aws):
    ec2_eu = boto3.client("ec2", region_name="eu-west-1", endpoint_url=aws.url)
    check = doctor.check_offering(ec2_eu, "p5.48xlarge", "eu-west-1")
    assert (check.ok, check.detail) == (False, "p5.48xlarge is not offered in eu-west-1")


def _quota_check(value: float | None, usage: int | None = 0, problem: str | None = None,
                 fix: str | None = None) -> QuotaCheck:
    return QuotaCheck(instance_type="g4dn.xlarge", spot=False, count=1, region="us-east-1",
                      quota_name=G_ON_DEMAND, vcpus_per_instance=4,
                      quota=None if value is None else Quota(G_ON_DEMAND, "L-DB2E81BA", value, "applied"),
                      usage=usage, problem=problem, fix=fix)


def test_quota_line_enough_short_and_unknown():
    enough = doctor.quota_check(_quota_check(8))
    assert enough.ok and enough.detail.endswith("is 8 vCPUs, 0 vCPUs in use: enough") and enough.fix is None
    short = doctor.quota_check(_quota_check(0))
    assert not short.ok and short.detail.endswith("short by 4 vCPUs")
    assert short.fix.startswith("awsrun quota request --instance-type g4dn.xlarge --count 1 ")
    assert short.data["shortfall"] == 4 and short.data["quota_code"] == "L-DB2E81BA"
    denied = doctor.quota_check(_quota_check(None, problem="access denied to Service Quotas ListServiceQuotas "
                                             "(AccessDeniedException)",
                                             fix="grant the IAM action servicequotas:ListServiceQuotas to this identity"))
    assert not denied.ok
    assert denied.detail == ("g4dn.xlarge x1 (on-demand): access denied to Service Quotas ListServiceQuotas "
                             "(AccessDeniedException)")
    assert denied.fix == "grant the IAM action servicequotas:ListServiceQuotas to this identity"


def test_tools():
    assert doctor.check_tool("rsync", ALL_TOOLS.get).detail == "rsync at /usr/bin/rsync"
    missing = doctor.check_tool("rsync", lambda name: None)
    assert (missing.ok, missing.name) == (False, "tool.rsync")
    assert missing.fix.startswith("install rsync (Debian/Ubuntu: apt install rsync")
    tmux = doctor.check_tool("tmux", lambda name: None)  # only `up --local` needs it: a warning, not a failure
    assert tmux.ok and tmux.warning and "awsrun up --local" in tmux.detail


def test_keys_must_be_private(tmp_path):
    keys = tmp_path / "keys"
    assert doctor.check_keys(keys).ok  # none yet
    keys.mkdir()
    (keys / "default").write_text("k")
    (keys / "default").chmod(0o600)
    (keys / "default.pub").write_text("p")
    (keys / "default.pub").chmod(0o644)
    assert doctor.check_keys(keys).detail == "1 private key, all 0600 or stricter"
    (keys / "other").write_text("k")
    (keys / "other").chmod(0o644)
    loose = doctor.check_keys(keys)
    assert not loose.ok
    assert loose.detail == f"private key readable by others: {keys / 'other'} (0644)"
    assert loose.fix == f"chmod 600 {keys / 'other'}"
    missing = doctor.check_keys(keys, extra=tmp_path / "nope.pem")
    assert not missing.ok and "does not exist" in missing.detail


def test_ssh_config_include(tmp_path):
    ours, user = tmp_path / "awsrun" / "ssh_config", tmp_path / "ssh" / "config"
    assert doctor.check_ssh_include(ours, user).ok  # awsrun wrote none: nothing to include
    ours.parent.mkdir()
    ours.write_text("Host i-1\n")
    absent = doctor.check_ssh_include(ours, user)
    assert not absent.ok and absent.fix == f"add `Include {ours}` as the first line of {user}"
    user.parent.mkdir()
    user.write_text(f"# mine\nInclude {ours}\nHost *\n  ServerAliveInterval 30\n")
    assert doctor.check_ssh_include(ours, user).ok
    user.write_text(f"include={tmp_path}/awsrun/ssh_*\n")  # keyword case, '=', glob: all ssh_config(5)
    assert doctor.check_ssh_include(ours, user).ok
    user.write_text(f"Host bastion\n  User me\nInclude {ours}\n")
    scoped = doctor.check_ssh_include(ours, user)
    assert not scoped.ok and "inside a Host/Match block" in scoped.detail
    assert scoped.fix.startswith("move the Include line above the first Host line")


# ------------------------------------------------------------------------------------ the whole run

@pytest.fixture
def sq():
    client = boto3.client("service-quotas", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber


def _run(home: Home, clients: AwsClients, tmp_path: Path, **kwargs) -> doctor.Report:
    return doctor.run_checks(home=home, instance_type="g4dn.xlarge", environ={}, which=ALL_TOOLS.get,
                             user_ssh_config=tmp_path / "no-ssh-config", clients_for=lambda region: clients, **kwargs)


def test_all_checks_pass(aws, sq, tmp_path):
    client, stubber = sq
    stubber.add_response("list_service_quotas", {"Quotas": [
        {"QuotaName": G_ON_DEMAND, "QuotaCode": "L-DB2E81BA", "Value": 8.0, "ServiceCode": "ec2"}]},
        {"ServiceCode": "ec2"})
    clients = AwsClients("us-east-1", sts=boto3.client("sts", region_name="us-east-1", endpoint_url=aws.url),
                         ec2=boto3.client("ec2", region_name="us-east-1", endpoint_url=aws.url), quotas=client)
    report = _run(Home(tmp_path / "home"), clients, tmp_path)
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert report.ok and report.failed == ()
    document = report.as_dict()
    assert set(document) == {"schema", "ok", "checks"} and document["schema"] == 1 and document["ok"] is True
    assert all(set(c) == {"name", "ok", "warning", "detail", "fix", "data"} for c in document["checks"])
    json.dumps(document)  # JSON-serialisable as is


def test_short_quota_fails_the_run_with_the_request_command(aws, sq, tmp_path):
    client, stubber = sq
    stubber.add_response("list_service_quotas", {"Quotas": [
        {"QuotaName": G_ON_DEMAND, "QuotaCode": "L-DB2E81BA", "Value": 0.0, "ServiceCode": "ec2"}]},
        {"ServiceCode": "ec2"})
    clients = AwsClients("us-east-1", sts=boto3.client("sts", region_name="us-east-1", endpoint_url=aws.url),
                         ec2=boto3.client("ec2", region_name="us-east-1", endpoint_url=aws.url), quotas=client)
    report = _run(Home(tmp_path / "home"), clients, tmp_path, count=2)
    [failed] = report.failed
    assert failed.name == "quota" and failed.detail.endswith("short by 8 vCPUs")
    assert failed.fix.startswith("awsrun quota request --instance-type g4dn.xlarge --count 2 ")


def test_bad_credentials_skip_the_cloud_checks(tmp_path):
    sts = boto3.client("sts", region_name="us-east-1")
    with Stubber(sts) as stubber:
        stubber.add_client_error("get_caller_identity", "ExpiredToken", "expired", 403)
        report = _run(Home(tmp_path / "home"), AwsClients("us-east-1", sts=sts, ec2=object(), quotas=object()),
                      tmp_path)
    by_name = {c.name: c for c in report.checks}
    assert [c.name for c in report.failed] == ["credentials", "offering", "quota"]
    assert by_name["offering"].detail == "not checked: the credentials do not work"


def test_region_from_the_flag_shows_in_the_quota_command(aws, sq, tmp_path):
    client, stubber = sq
    stubber.add_response("list_service_quotas", {"Quotas": [
        {"QuotaName": G_ON_DEMAND, "QuotaCode": "L-DB2E81BA", "Value": 0.0, "ServiceCode": "ec2"}]},
        {"ServiceCode": "ec2"})
    clients = AwsClients("us-west-2", sts=boto3.client("sts", region_name="us-west-2", endpoint_url=aws.url),
                         ec2=boto3.client("ec2", region_name="us-west-2", endpoint_url=aws.url), quotas=client)
    report = _run(Home(tmp_path / "home"), clients, tmp_path, region="us-west-2")
    by_name = {c.name: c for c in report.checks}
    assert by_name["region"].detail == "us-west-2 (from --region)"
    assert by_name["quota"].fix.startswith(
        "awsrun quota request --instance-type g4dn.xlarge --count 1 --region us-west-2")


# ------------------------------------------------------------------------- the CLI against moto

CLI_ENV = {"AWS_MAX_ATTEMPTS": "1"}  # moto answers ListServiceQuotas with a 500: no retry backoff in tests


def test_doctor_json_against_moto(aws, cli, tmp_path):
    result = cli("doctor", "--json", "--instance-type", "g4dn.xlarge", env={**CLI_ENV, "HOME": str(tmp_path)})
    document = json.loads(result.stdout)
    assert set(document) == {"schema", "ok", "checks"}, result
    assert [c["name"] for c in document["checks"]] == list(CHECK_NAMES)
    assert all(set(c) == {"name", "ok", "warning", "detail", "fix", "data"} for c in document["checks"])
    by_name = {c["name"]: c for c in document["checks"]}
    assert by_name["endpoint"]["warning"] is True and by_name["endpoint"]["detail"].startswith(
        f"WARNING: AWS_ENDPOINT_URL={aws.url}")
    assert by_name["credentials"]["data"] == {"account": "123456789012", "arn": "arn:aws:sts::123456789012:user/moto"}
    assert by_name["region"]["data"] == {"region": "us-east-1", "source": "AWS_REGION"}
    assert by_name["offering"]["data"]["zones"] == ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d",
                                                   "us-east-1f"]
    # the harness serves EC2 quotas (512 vCPUs applied): every check passes
    assert [c["name"] for c in document["checks"] if not c["ok"]] == [], result
    assert "512" in by_name["quota"]["detail"], by_name["quota"]
    assert document["ok"] is True and result.exit_code == 0, result


def test_doctor_fails_on_a_new_accounts_zero_gpu_quota(aws, cli, tmp_path):
    aws.set_quota("Running On-Demand G and VT instances", 0)
    result = cli("doctor", "--json", "--instance-type", "g4dn.xlarge", env={**CLI_ENV, "HOME": str(tmp_path)})
    document = json.loads(result.stdout)
    assert [c["name"] for c in document["checks"] if not c["ok"]] == ["quota"], result
    quota = {c["name"]: c for c in document["checks"]}["quota"]
    assert "awsrun quota request --instance-type g4dn.xlarge --count 1" in quota["fix"], quota
    assert document["ok"] is False and result.exit_code == 8
    assert result.stderr.strip().splitlines()[-2] == "error: 1 of 10 checks failed: quota"


def test_doctor_type_not_offered_fails(aws, cli, tmp_path):
    result = cli("doctor", "--instance-type", "nosuch.type", env={**CLI_ENV, "HOME": str(tmp_path)})
    assert result.exit_code == 8, result
    assert "✗ offering     nosuch.type is not offered in us-east-1" in result.stdout
    assert "✓ credentials  account 123456789012 as arn:aws:sts::123456789012:user/moto" in result.stdout
    assert "⚠ endpoint     WARNING: AWS_ENDPOINT_URL=" in result.stdout
    assert "error: 2 of 10 checks failed: offering, quota" in result.stderr


def test_doctor_flags_loose_keys_and_a_missing_include(aws, cli, tmp_path):
    key = cli.home / "keys" / "default"
    key.parent.mkdir(parents=True)
    key.write_text("not really a key")
    key.chmod(0o644)
    (cli.home / "ssh_config").write_text("Host i-0\n")
    result = cli("doctor", "--json", "-t", "nosuch.type", env={**CLI_ENV, "HOME": str(tmp_path)})
    by_name = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert by_name["keys"]["fix"] == f"chmod 600 {key}"
    assert by_name["ssh-config"]["fix"] == (f"add `Include {cli.home / 'ssh_config'}` as the first line of "
                                            f"{tmp_path / '.ssh' / 'config'}")
    assert result.exit_code == 8


def test_doctor_help_does_not_import_boto3(cli):
    result = cli("doctor", "--help", env={"PYTHONVERBOSE": "1"})
    assert result.exit_code == 0 and "--instance-type" in result.stdout
    assert "import 'boto3'" not in result.stderr and "import 'awsrun.account.quota'" not in result.stderr
