"""Every AWS error people hit, provoked, and the message asserted.

Where moto produces the error itself (an unknown AMI, missing credentials, moto's HTTP 500 for
placement groups) it does; otherwise the error is injected at the boto3 client boundary: a
`before-send` handler answers one operation with the HTTP error response AWS would send, so botocore's
own parsing and retries run exactly as against AWS, and the rest of the calls reach moto.
"""
from __future__ import annotations

import sys
from xml.sax.saxutils import escape

import pytest

from awsrun.cluster import ops, up
from awsrun.cluster.context import UpRequest
from awsrun.errors import CloudError, ConfigError, NotImplementedYet
from awsrun.home import Home
from awsrun.progress import Silent
from awsrun.providers import aws_errors
from awsrun.providers.aws import AwsProvider
from awsrun.providers.aws_errors import ErrorContext
from awsrun.settings import Settings
from awsrun.state import State

CIDR = "203.0.113.7/32"


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


class Injector:
    """Builds providers (as `clusters.up` asks for them) that answer chosen operations with AWS errors."""

    def __init__(self, max_attempts: int = 1):
        self.max_attempts = max_attempts
        self.rules: list[tuple[str, str, str, str, int, int | None]] = []
        self.sent: dict[str, int] = {}

    def error(self, operation: str, code: str, message: str = "", *, service: str = "ec2", status: int = 400,
              times: int | None = None) -> "Injector":
        self.rules.append((service, operation, code, message, status, times))
        return self

    def __call__(self, region: str | None) -> AwsProvider:
        provider = AwsProvider(region, max_attempts=self.max_attempts)
        for service, operation, code, message, status, times in self.rules:
            client = provider.client(service)
            client.meta.events.register(f"before-send.{service}.{operation}",
                                        self._handler(operation, code, message, status, times, service))
        return provider

    def _handler(self, operation, code, message, status, times, service):
        from botocore.awsrequest import AWSResponse

        if service == "ec2":
            body = (f"<Response><Errors><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
                    "</Errors><RequestID>test</RequestID></Response>")
        else:
            body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{escape(message)}"
                    "</Message></Error><RequestId>test</RequestId></ErrorResponse>")

        def handler(request, **_):
            self.sent[operation] = self.sent.get(operation, 0) + 1
            if times is not None and self.sent[operation] > times:
                return None  # let the call through to moto
            return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, _Body(body.encode()))

        return handler


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home").ensure()


def settings(**changes) -> Settings:
    return Settings(**{"ssh_cidr": CIDR, "caller_ip_url": "off", "ssh_timeout": 20.0, **changes})


def run_up(home: Home, aws, **changes):
    return up.up(home, UpRequest(settings(**changes), bootstrap=False), Silent(), aws=aws)


def recorded_instances(home: Home) -> list:
    state = State.open(home.state_db)
    try:
        return state.instances()
    finally:
        state.close()


def live_instances(ec2) -> list[dict]:
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}]
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def test_expired_session_token(aws, home):
    aws_ = Injector().error("GetCallerIdentity", "ExpiredToken", "The security token included in the request is "
                            "expired", service="sts", status=403)
    with pytest.raises(aws_errors.CredentialsError) as raised:
        run_up(home, aws_)
    assert raised.value.message == "your AWS session token has expired (ExpiredToken)"
    assert "aws sso login" in raised.value.hint
    assert recorded_instances(home) == []


def test_credentials_aws_rejects(aws, home):
    aws_ = Injector().error("DescribeInstances", "AuthFailure", "AWS was not able to validate the provided "
                            "access credentials", status=401)
    with pytest.raises(aws_errors.CredentialsError) as raised:
        run_up(home, aws_)
    assert raised.value.message == ("AWS rejected the credentials (AuthFailure): AWS was not able to validate "
                                    "the provided access credentials")
    assert "aws sts get-caller-identity" in raised.value.hint


def test_identity_without_permission(aws, ec2, home):
    aws_ = Injector().error("RunInstances", "UnauthorizedOperation", "You are not authorized to perform this "
                            "operation. Encoded authorization failure message: abc", status=403)
    with pytest.raises(aws_errors.AccessDeniedError) as raised:
        run_up(home, aws_)
    assert raised.value.message == "your AWS identity may not call RunInstances (UnauthorizedOperation)"
    assert "ec2:RunInstances" in raised.value.hint
    assert recorded_instances(home) == [] and live_instances(ec2) == []  # no placeholder left behind


def test_no_credentials_at_all(cli, aws):
    nothing = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}
    result = cli("up", "--ssh-cidr", CIDR, "--no-bootstrap", env=nothing)
    assert result.exit_code == 4 and "Traceback" not in result.stderr, result
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == \
        ["error: no AWS credentials found"]
    assert "aws configure" in result.stderr


def test_capacity_error_tries_each_zone_once_then_names_them(aws, ec2, home):
    aws_ = Injector().error("RunInstances", "InsufficientInstanceCapacity",
                            "We currently do not have sufficient g4dn.xlarge capacity in the Availability Zone "
                            "you requested", status=500)
    with pytest.raises(aws_errors.CapacityError) as raised:
        run_up(home, aws_)
    zones = "us-east-1a, us-east-1b, us-east-1c, us-east-1d, us-east-1f"  # where moto offers g4dn.xlarge
    assert aws_.sent["RunInstances"] == 6  # EC2's choice, then each offering zone once, never again
    assert raised.value.message == (
        "AWS has no on-demand capacity for g4dn.xlarge in us-east-1f right now (InsufficientInstanceCapacity)"
        f"; tried: a zone of EC2's choice, {zones}")
    assert raised.value.hint.startswith("try another zone (--zone), another type (e.g. p2.xlarge, p2.8xlarge")
    assert "--spot" in raised.value.hint
    assert recorded_instances(home) == [] and live_instances(ec2) == []


def test_capacity_in_one_zone_moves_on_to_the_next(aws, ec2, home, fleet):
    aws_ = Injector().error("RunInstances", "InsufficientInstanceCapacity", "no capacity", status=500, times=1)
    result = run_up(home, aws_, ssh_proxy_command=fleet.proxy_command)
    (instance,) = live_instances(ec2)
    assert result.launched == (instance["InstanceId"],)
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert [r.id for r in recorded_instances(home)] == [instance["InstanceId"]]


def test_spot_price_above_max_price(aws, home):
    aws_ = Injector().error("RunInstances", "MaxSpotPriceTooLow", "Your Spot request price of 0.01 is lower than "
                            "the minimum required Spot request fulfillment price of 0.2")
    with pytest.raises(aws_errors.SpotPriceError) as raised:
        run_up(home, aws_, spot=True, max_price=0.01)
    assert raised.value.message == ("the spot price for g4dn.xlarge in us-east-1a is above your --max-price of "
                                    "$0.01/h (MaxSpotPriceTooLow)")
    assert "--on-demand" in raised.value.hint and aws_.sent["RunInstances"] == 1


def test_no_spot_capacity(aws, home):
    aws_ = Injector().error("RunInstances", "InsufficientCapacity", "There is no Spot capacity available",
                            status=500)
    with pytest.raises(aws_errors.CapacityError) as raised:
        run_up(home, aws_, spot=True)
    assert raised.value.message.startswith("AWS has no spot capacity for g4dn.xlarge in ")
    assert "--on-demand" in raised.value.hint


def test_new_account_gpu_vcpu_quota_on_demand(aws, home):
    aws_ = Injector().error("RunInstances", "VcpuLimitExceeded", "You have requested more vCPU capacity than your "
                            "current vCPU limit of 0 allows for the instance bucket that the specified instance "
                            "type belongs to.")
    with pytest.raises(aws_errors.QuotaError) as raised:
        run_up(home, aws_, instance_type="p2.xlarge")
    assert raised.value.message == (
        'the account\'s quota "Running On-Demand P instances" is too low for on-demand p2.xlarge (4 vCPUs) in '
        "us-east-1 (VcpuLimitExceeded); new accounts start at 0 vCPUs for GPU types")
    assert raised.value.hint == (
        "request an increase: `aws service-quotas request-service-quota-increase --service-code ec2 --quota-code "
        "L-417A185B --desired-value 4 --region us-east-1` or in the console: "
        "https://us-east-1.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-417A185B")
    assert aws_.sent["RunInstances"] == 1  # a quota error is not retried in other zones


def test_spot_instance_count_quota(aws, home):
    aws_ = Injector().error("RunInstances", "MaxSpotInstanceCountExceeded", "Max spot instance count exceeded")
    with pytest.raises(aws_errors.QuotaError) as raised:
        run_up(home, aws_, spot=True)
    assert '"All G and VT Spot Instance Requests"' in raised.value.message
    assert "--quota-code L-3819A6DF --desired-value 4 --region us-east-1" in raised.value.hint


def test_unknown_ami(aws, ec2, home):
    # moto itself answers InvalidAMIID.NotFound
    with pytest.raises(aws_errors.ImageNotFound) as raised:
        run_up(home, AwsProvider, ami="ami-0123456789abcdef0")
    assert raised.value.message == "AMI ami-0123456789abcdef0 does not exist in us-east-1 (InvalidAMIID.NotFound)"
    assert "--ami ubuntu or --ami dlami" in raised.value.hint
    # checked before anything is created: no instance, security group, key pair or cluster record
    assert live_instances(ec2) == [] and ec2.describe_key_pairs()["KeyPairs"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    state = State.open(home.state_db)
    assert state.clusters() == []
    state.close()


def test_type_not_offered_in_the_zone(aws, home):
    aws_ = Injector().error("RunInstances", "Unsupported", "Your requested instance type (p5.48xlarge) is not "
                            "supported in your requested Availability Zone (us-east-1e).")
    with pytest.raises(aws_errors.TypeNotOffered) as raised:
        run_up(home, aws_, instance_type="p5.48xlarge", zone="us-east-1e")
    assert raised.value.message.startswith("p5.48xlarge is not offered in us-east-1e: Your requested instance type")
    assert "describe-instance-type-offerings" in raised.value.hint and "Values=p5.48xlarge" in raised.value.hint


def test_type_not_offered_in_the_region_is_not_retried_per_zone(aws, home):
    # the offerings list has it, but EC2 refuses the type at launch: one try, no round of the zones
    aws_ = Injector().error("RunInstances", "InvalidParameterValue", "Invalid value 'g5.xlarge' for InstanceType.")
    with pytest.raises(aws_errors.TypeNotOffered) as raised:
        run_up(home, aws_, instance_type="g5.xlarge")
    assert raised.value.message == "g5.xlarge is not offered in us-east-1: Invalid value 'g5.xlarge' for InstanceType."
    assert aws_.sent["RunInstances"] == 1


def test_a_type_the_region_does_not_offer_is_refused_before_any_launch(aws, home):
    aws_ = Injector()
    with pytest.raises(aws_errors.TypeNotOffered, match="p9.xlarge is not offered in us-east-1"):
        run_up(home, aws_, instance_type="p9.xlarge")
    assert aws_.sent.get("RunInstances", 0) == 0


def test_throttling_after_botocore_retries(aws, home):
    aws_ = Injector(max_attempts=2).error("DescribeInstances", "RequestLimitExceeded", "Request limit exceeded.",
                                          status=503)
    with pytest.raises(aws_errors.ThrottledError) as raised:
        run_up(home, aws_)
    assert aws_.sent["DescribeInstances"] == 2  # botocore retried before giving up
    assert raised.value.message == "AWS throttled awsrun's requests (RequestLimitExceeded) after 2 attempts"


def test_spot_instance_that_cannot_stop(aws, ec2, home, fleet):
    run_up(home, AwsProvider, spot=True, ssh_proxy_command=fleet.proxy_command)
    (instance,) = live_instances(ec2)
    aws_ = Injector().error("StopInstances", "UnsupportedOperation", f"You can't stop the Spot Instance "
                            f"'{instance['InstanceId']}' because it is associated with a one-time Spot Instance "
                            "request. You can only stop Spot Instances associated with persistent Spot Instance "
                            "requests.")
    with pytest.raises(aws_errors.SpotCannotStop) as raised:
        ops.stop(home, settings(), Silent(), aws=aws_)
    assert raised.value.message.startswith(f"{instance['InstanceId']} is a spot instance that cannot be stopped: ")
    assert "`awsrun down` terminates it" in raised.value.hint
    ops.down(home, settings(), Silent())
    assert live_instances(ec2) == []


def test_bootstrap_not_available_yet_fails_before_anything_is_launched(aws, ec2, home, monkeypatch):
    monkeypatch.setitem(sys.modules, "awsrun.setup.bootstrap", None)  # as if the module did not exist
    with pytest.raises(NotImplementedYet, match="bootstrap is not available yet; use --no-bootstrap"):
        up.up(home, UpRequest(settings()), Silent(), aws=AwsProvider)
    assert live_instances(ec2) == []


def test_errors_outside_the_api():
    from botocore.exceptions import (
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        TokenRetrievalError,
    )

    assert aws_errors.translate(NoCredentialsError()).message == "no AWS credentials found"
    region = aws_errors.translate(NoRegionError())
    assert isinstance(region, ConfigError) and "--region" in region.hint
    unreachable = aws_errors.translate(EndpointConnectionError(endpoint_url="https://ec2.example"))
    assert unreachable.message == 'cannot reach AWS: Could not connect to the endpoint URL: "https://ec2.example"'
    sso = aws_errors.translate(TokenRetrievalError(provider="sso", error_msg="Token has expired"))
    assert sso.message.startswith("your AWS SSO session has expired") and "aws sso login" in sso.hint


def test_credential_problems_have_one_wording_for_every_command():
    from botocore.exceptions import (
        ClientError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    partial = PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY")
    profile = ProfileNotFound(profile="work")
    expired = ClientError({"Error": {"Code": "ExpiredTokenException", "Message": "x"}}, "GetServiceQuota")
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "x"}}, "GetServiceQuota")
    for exc in (partial, profile, expired):
        described = aws_errors.describe_aws_error(exc, "GetServiceQuota", "servicequotas:GetServiceQuota")
        assert described.message == aws_errors.translate(exc).message  # doctor/quota = the rest
    assert aws_errors.translate(partial).message.startswith("incomplete AWS credentials")
    assert isinstance(aws_errors.translate(profile), ConfigError) and "list-profiles" in aws_errors.translate(profile).hint
    assert aws_errors.translate(expired).message == "your AWS session token has expired (ExpiredTokenException)"
    assert aws_errors.credentials_error(denied) is None


def test_unknown_codes_keep_aws_words():
    error = aws_errors.from_code("SomethingNew", "A  long\nmessage", "RunInstances", ErrorContext())
    assert type(error) is CloudError and error.message == "AWS RunInstances failed: SomethingNew: A long message"
    spot_price = aws_errors.from_code("SpotMaxPriceTooLow", "", "RunInstances",
                                      ErrorContext(instance_type="p2.xlarge", zone="us-west-2b", spot=True))
    assert spot_price.message == "the spot price for p2.xlarge in us-west-2b is above your --max-price (SpotMaxPriceTooLow)"
