"""boto3 clients for the checks of `awsrun doctor` and `awsrun quota` (STS, EC2, Service Quotas), made on
first use, and the region they run in. Tests hand ready clients in."""
from __future__ import annotations

import os
from typing import Any

from awsrun.errors import ConfigError
from awsrun.providers.aws_errors import credentials_error


def _session() -> Any:
    """boto3's session from its own chain; a profile that is not there is a one-line error."""
    import boto3

    try:
        return boto3.session.Session()
    except Exception as exc:
        raise (credentials_error(exc) or exc) from None


class AwsClients:
    """The boto3 clients one check needs, made on first use. Tests pass ready clients (e.g. Stubbed)."""

    SERVICES = {"sts": "sts", "ec2": "ec2", "quotas": "service-quotas"}

    def __init__(self, region: str, **clients: Any):
        unknown = set(clients) - set(self.SERVICES)
        if unknown:
            raise TypeError(f"unknown clients: {sorted(unknown)}")
        self.region = region
        self._clients: dict[str, Any] = dict(clients)
        self._session: Any = None

    def get(self, name: str) -> Any:
        if name not in self._clients:
            from botocore.config import Config

            if self._session is None:
                self._session = _session()
            # Standard retries (throttling, 5xx); AWS_MAX_ATTEMPTS still overrides the attempt count.
            config = Config(retries={"mode": "standard"}, connect_timeout=10, read_timeout=30)
            self._clients[name] = self._session.client(self.SERVICES[name], region_name=self.region,
                                                       config=config)
        return self._clients[name]

    @property
    def sts(self) -> Any:
        return self.get("sts")

    @property
    def ec2(self) -> Any:
        return self.get("ec2")

    @property
    def quotas(self) -> Any:
        return self.get("quotas")


def known_regions() -> list[str]:
    """Every region botocore's data files name, in every partition: read locally, no call to AWS."""
    import botocore.session

    session = botocore.session.get_session()
    return [region for partition in session.get_available_partitions()
            for region in session.get_available_regions("ec2", partition_name=partition)]


def requested_region(explicit: str | None) -> str | None:
    """What a boto3 session must be given as region_name so that awsrun's order holds everywhere:
    the flag or setting, then AWS_REGION; None leaves the rest to boto3 (AWS_DEFAULT_REGION, the profile).

    boto3 itself ignores AWS_REGION (botocore reads AWS_DEFAULT_REGION only); the AWS CLI v2 and the other
    SDKs read it first, and so does awsrun.
    """
    return explicit or os.environ.get("AWS_REGION") or None


def chain_region() -> str | None:
    """The region of the AWS chain: AWS_REGION, then boto3's (AWS_DEFAULT_REGION, the profile), or None."""
    return requested_region(None) or _session().region_name


def credentials_source() -> str | None:
    """Where boto3's chain finds credentials (e.g. 'env', 'shared-credentials-file'), or None: read
    locally, with no call to AWS and no region needed."""
    found = _session().get_credentials()
    return getattr(found, "method", None) or "unknown" if found is not None else None


def region_flag_for(explicit: str | None) -> str | None:
    """The region to write into commands shown to the user: `explicit` when boto3's default differs."""
    return explicit if explicit and explicit != chain_region() else None


def resolve_region(explicit: str | None) -> str:
    """`explicit` (flag or setting) or boto3's chain; a ConfigError naming the fix when neither has one."""
    region = explicit or chain_region()
    if not region:
        raise ConfigError("no AWS region set",
                          hint="pass --region R, set AWS_REGION, or `aws configure set region R`")
    return region
