"""AWS errors -> awsrun errors: the one place that reads AWS error codes.

Works on what botocore raises without importing it: a ClientError carries `response["Error"]` and
`operation_name`; the other botocore exceptions are told apart by class name (only `botocore_errors` and
`describe_aws_error` import botocore, when an error is there to catch or word). Each message says what
happened in the user's words and the hint names the fix (a flag, a command, a quota to raise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from awsrun.errors import AwsrunError, CloudError, ConfigError


class CredentialsError(CloudError):
    """No credentials, expired ones, or ones AWS rejects."""


class AccessDeniedError(CloudError):
    """The identity is known but lacks a permission."""


class CapacityError(CloudError):
    """No capacity for the type in a zone right now: worth trying another zone, never blindly again."""


class QuotaError(CloudError):
    """The account's vCPU quota does not allow the launch."""


class SpotPriceError(CloudError):
    """The spot price is above --max-price."""


class TypeNotOffered(CloudError):
    """The instance type does not exist in this region or zone."""


class ImageNotFound(CloudError):
    """The AMI does not exist in this region (or is not shared with the account)."""


class ThrottledError(CloudError):
    """RequestLimitExceeded still, after botocore's retries."""


class SpotCannotStop(CloudError):
    """A spot instance from a one-time request: it can be terminated, not stopped."""


# Service Quotas codes of the vCPU quotas GPU users hit (service code ec2). The names are those
# awsrun.setup.catalog.quota_names returns; a name missing here gets a lookup command instead of a code.
QUOTA_CODES = {
    "Running On-Demand G and VT instances": "L-DB2E81BA",
    "All G and VT Spot Instance Requests": "L-3819A6DF",
    "Running On-Demand P instances": "L-417A185B",
    "All P Spot Instance Requests": "L-7212CCBC",
    "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances": "L-1216C47A",
    "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests": "L-34B43A08",
}

# The credential and permission codes of every AWS service awsrun calls (EC2, STS, SSM, Service Quotas).
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"})
INVALID_CODES = frozenset({"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                           "InvalidAccessKeyId", "IncompleteSignature", "InvalidSignatureException"})
DENIED_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException",
                          "DependencyAccessDeniedException"})
_CAPACITY = {"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
             "InsufficientReservedInstanceCapacity", "capacity-not-available"}
_QUOTA = {"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"}
_SPOT_PRICE = {"MaxSpotPriceTooLow", "SpotMaxPriceTooLow"}
_THROTTLED = {"RequestLimitExceeded", "Throttling", "ThrottlingException"}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
_SSO_EXPIRED = {"TokenRetrievalError", "SSOTokenLoadError", "UnauthorizedSSOTokenError"}
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}


@dataclass(frozen=True)
class ErrorContext:
    """What awsrun was doing, for the message: the launch's type, market, region, zone, AMI, ..."""

    region: str | None = None
    instance_type: str | None = None
    spot: bool = False
    zone: str | None = None
    zones_tried: tuple[str, ...] = ()
    ami: str | None = None
    max_price: float | None = None
    instance_id: str | None = None
    attempts: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def credentials_error(exc: BaseException) -> AwsrunError | None:
    """The error to show when `exc` means 'your credentials do not work' (missing, partial, expired, rejected,
    a profile that is not there), else None. The one wording of these, for every command."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    response = getattr(exc, "response", None)
    error = (response.get("Error") or {}) if isinstance(response, dict) else {}
    code = str(error.get("Code", ""))
    if "PartialCredentialsError" in names:
        return CredentialsError(f"incomplete AWS credentials: {_first_line(exc)}",
                                hint="set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or fix the profile)")
    if names & _NO_CREDENTIALS:
        return CredentialsError(
            "no AWS credentials found",
            hint="run `aws configure` (or `aws sso login --profile NAME` and export AWS_PROFILE=NAME), "
                 "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    if names & _SSO_EXPIRED:
        return CredentialsError(f"your AWS SSO session has expired: {_first_line(exc)}",
                                hint="run `aws sso login` (with --profile NAME if you use one), then re-run")
    if "ProfileNotFound" in names:
        return ConfigError(f"AWS profile not found: {_first_line(exc)}",
                           hint="check AWS_PROFILE against `aws configure list-profiles`")
    if code in EXPIRED_CODES:
        return CredentialsError(f"your AWS session token has expired ({code})",
                                hint="get fresh credentials (`aws sso login`, or a new `aws sts` session), then re-run")
    if code in INVALID_CODES:
        return CredentialsError(f"AWS rejected the credentials ({code}): {_short(str(error.get('Message', '')))}"
                                .rstrip(": "),
                                hint="check AWS_PROFILE / AWS_ACCESS_KEY_ID; `aws sts get-caller-identity` "
                                     "shows which identity is in use")
    return None


def botocore_errors() -> tuple[type[Exception], ...]:
    """What a boto3 call raises when AWS answers with an error or cannot be reached, for an `except` clause
    outside providers/ (botocore is imported here, when the first call fails)."""
    from botocore import exceptions as bx

    return bx.ClientError, bx.BotoCoreError


def aws_error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def aws_message(exc: BaseException) -> str:
    """AWS's own message of a ClientError, on one line and at most 300 characters ("" for an HTML page)."""
    response = getattr(exc, "response", None)
    message = response.get("Error", {}).get("Message", "") if isinstance(response, dict) else ""
    message = " ".join(str(message).split())
    if message.startswith("<"):  # an HTML error page (a proxy or an emulator), not an AWS message
        message = ""
    return message[:300]


def describe_aws_error(exc: BaseException, operation: str, iam_action: str) -> AwsrunError:
    """One AwsrunError, with the fix, for a failed AWS call (credentials, permissions, network, other): the
    wording of `quota` and `doctor`, whose calls name their operation and IAM action."""
    from botocore import exceptions as bx

    creds = credentials_error(exc)
    if creds is not None:
        return creds
    code = aws_error_code(exc)
    if code in DENIED_CODES:
        return CloudError(f"access denied to {operation} ({code})",
                          hint=f"grant the IAM action {iam_action} to this identity")
    if isinstance(exc, bx.EndpointConnectionError):
        return CloudError(f"cannot reach the AWS endpoint for {operation}: {exc}",
                          hint="check the network, the region and AWS_ENDPOINT_URL")
    if isinstance(exc, bx.BotoCoreError):
        return CloudError(f"{operation} failed: {exc}")
    message = aws_message(exc)
    return CloudError(f"{operation} failed ({code or type(exc).__name__})" + (f": {message}" if message else ""))


def translate(exc: BaseException, context: ErrorContext | None = None) -> AwsrunError:
    """Any exception from a boto3 call -> the AwsrunError to show. Unknown ones keep AWS's words."""
    context = context or ErrorContext()
    names = {cls.__name__ for cls in type(exc).__mro__}
    response = getattr(exc, "response", None)
    credentials = credentials_error(exc)
    if credentials is not None:
        return credentials
    if "ClientError" in names and isinstance(response, dict):
        error = response.get("Error") or {}
        return from_code(str(error.get("Code", "Unknown")), str(error.get("Message", "")),
                         getattr(exc, "operation_name", None) or "the request", context)
    if "NoRegionError" in names:
        return ConfigError("no AWS region is configured",
                           hint="pass --region, set AWS_REGION, or run `aws configure set region us-east-1`")
    if names & _UNREACHABLE:
        return CloudError(f"cannot reach AWS: {_first_line(exc)}",
                          hint="check the network connection, the region and AWS_ENDPOINT_URL if set")
    if "ParamValidationError" in names:
        return CloudError(f"awsrun built an invalid AWS request: {_first_line(exc)}",
                          hint="this is a bug in awsrun; please report it with `--debug` output")
    return CloudError(f"AWS call failed: {type(exc).__name__}: {_first_line(exc)}")


def from_code(code: str, message: str, operation: str, context: ErrorContext) -> AwsrunError:
    text = _short(message)
    where = context.zone or (", ".join(context.zones_tried) if context.zones_tried else None) \
        or context.region or "this region"
    kind = context.instance_type or "this instance type"
    market = "spot" if context.spot else "on-demand"

    if code in DENIED_CODES:
        return AccessDeniedError(f"your AWS identity may not call {operation} ({code})",
                                hint=f"its IAM policy needs ec2:{operation} (and the other actions awsrun uses)")
    if code in _CAPACITY:
        tried = f"; tried {', '.join(context.zones_tried)}" if context.zones_tried else ""
        return CapacityError(
            f"AWS has no {market} capacity for {kind} in {where} right now ({code}){tried}",
            hint=f"try another zone (--zone), another type ({_other_types(context.instance_type)}), "
                 f"{'--on-demand' if context.spot else '--spot'}, or again later: capacity comes and goes",
        )
    if code in _SPOT_PRICE:
        asked = f" of ${context.max_price}/h" if context.max_price is not None else ""
        return SpotPriceError(
            f"the spot price for {kind} in {where} is above your --max-price{asked} ({code})",
            hint="raise --max-price, leave it out (you then pay the current spot price, at most the "
                 "on-demand price), or use --on-demand",
        )
    if code in _QUOTA:
        return quota_error(code, context)
    if code.startswith("InvalidAMIID"):
        ami = context.ami or "the AMI"
        return ImageNotFound(
            f"AMI {ami} does not exist in {context.region or 'this region'} ({code})",
            hint="AMI ids differ per region: use --ami ubuntu or --ami dlami (looked up in each region), "
                 "or an ami-... id from this region",
        )
    if code in ("Unsupported", "InvalidInstanceType") or (code == "InvalidParameterValue" and _mentions_type(message)):
        return TypeNotOffered(
            f"{kind} is not offered in {where}: {text}",
            hint=f"pick another zone (--zone) or region (--region); `aws ec2 describe-instance-type-offerings "
                 f"--location-type availability-zone --filters Name=instance-type,Values={kind} "
                 f"--region {context.region or 'REGION'}` lists where it is",
        )
    if code == "UnsupportedOperation" and operation == "StopInstances":
        target = context.instance_id or "this instance"
        return SpotCannotStop(
            f"{target} is a spot instance that cannot be stopped: {text}",
            hint="only spot instances from a persistent request can stop; `awsrun down` terminates it "
                 "(the root volume goes with it unless keep_volume is set)",
        )
    if code in _THROTTLED:
        after = f" after {context.attempts} attempts" if context.attempts else " after retries"
        return ThrottledError(f"AWS throttled awsrun's requests ({code}){after}",
                              hint="wait a minute and re-run; other tools in this account may be using the API rate")
    if code == "OptInRequired":
        return CloudError(f"the account is not subscribed to what {operation} needs: {text}",
                          hint="accept the AMI's terms in AWS Marketplace, or enable the region, then re-run")
    if code == "InvalidBlockDeviceMapping":
        return ConfigError(f"the root volume request was refused: {text}",
                           hint="raise --volume-gb to at least the image's snapshot size")
    return CloudError(f"AWS {operation} failed: {code}: {text}")


def quota_error(code: str, context: ErrorContext) -> QuotaError:
    from awsrun.setup import catalog

    kind = context.instance_type or "this instance type"
    market = "spot" if context.spot else "on-demand"
    region = context.region or "REGION"
    try:
        name = catalog.quota_names(kind, context.spot)
    except (ValueError, KeyError):
        name = None
    spec = catalog.lookup(kind) if context.instance_type else None
    vcpus = spec.vcpus if spec else None
    need = f" ({vcpus} vCPUs)" if vcpus else ""
    if name is None:
        return QuotaError(f"the account's vCPU quota does not allow {market} {kind}{need} ({code})",
                          hint="raise the matching EC2 vCPU quota in the Service Quotas console")
    quota_code = QUOTA_CODES.get(name)
    console = f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas"
    if quota_code:
        command = (f"aws service-quotas request-service-quota-increase --service-code ec2 "
                   f"--quota-code {quota_code} --desired-value {vcpus or 'VCPUS'} --region {region}")
        console += f"/{quota_code}"
    else:
        command = (f"aws service-quotas list-service-quotas --service-code ec2 --region {region} "
                   f"--query \"Quotas[?QuotaName=='{name}']\"")
    return QuotaError(
        f"the account's quota \"{name}\" is too low for {market} {kind}{need} in {region} ({code}); "
        "new accounts start at 0 vCPUs for GPU types",
        hint=f"request an increase: `{command}` or in the console: {console}",
    )


def _other_types(instance_type: str | None) -> str:
    try:
        from awsrun.setup import catalog

        others = [t for t in catalog.gpu_types() if t != instance_type][:3]
    except Exception:  # the catalog only decorates the hint
        others = []
    return "e.g. " + ", ".join(others) if others else "--instance-type"


def _mentions_type(message: str) -> bool:
    return "instancetype" in message.lower().replace(" ", "")


def _short(message: str, limit: int = 300) -> str:
    line = " ".join(message.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return _short(text.splitlines()[0]) if text else type(exc).__name__
