"""Raising a GPU vCPU quota: filing a Service Quotas increase request for what a launch needs, and the
history of such requests (`awsrun quota request`, `awsrun quota status`). Which quota governs a launch and
how it compares: awsrun.account.quota.

Nothing here prints or imports click; boto3 is reached only through the clients passed in.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from awsrun.account.quota import SERVICE_CODE, QuotaCheck, QuotaUnknown
from awsrun.errors import AwsrunError, CloudError
from awsrun.providers.aws_clients import AwsClients
from awsrun.providers.aws_errors import (
    aws_error_code,
    aws_message,
    botocore_errors,
    describe_aws_error,
)


class NothingToRequest(AwsrunError):
    """The quota already covers the launch: no increase to file."""

    exit_code = 0


@dataclass(frozen=True)
class QuotaRequest:
    """One quota increase request, as Service Quotas reports it."""

    id: str
    quota_name: str
    quota_code: str
    desired: float
    status: str
    created: str | None = None
    last_updated: str | None = None
    case_id: str | None = None
    region: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def desired_value(check: QuotaCheck) -> int:
    """What to ask for: max(current value, vCPUs in use + vCPUs needed). Unknown usage counts as 0."""
    if check.quota is None or check.needed is None:
        raise ValueError("desired_value needs a known quota and vCPU count")
    return max(math.ceil(check.quota.value), (check.usage or 0) + check.needed)


def request_increase(clients: AwsClients, check: QuotaCheck) -> QuotaRequest:
    """File request_service_quota_increase for the check's quota, asking for `desired_value(check)`."""
    if check.quota is None:
        raise QuotaUnknown(check.problem or "quota unknown", hint=check.fix)
    if check.ok:
        raise NothingToRequest(f"nothing to request: {check.summary()}")
    desired = desired_value(check)
    try:
        reply = clients.quotas.request_service_quota_increase(
            ServiceCode=SERVICE_CODE, QuotaCode=check.quota.code, DesiredValue=float(desired))
    except botocore_errors() as exc:
        code = aws_error_code(exc)  # None for a BotoCoreError (no answer from AWS): described below
        if code == "ResourceAlreadyExistsException":
            raise CloudError(f"a request to raise '{check.quota.name}' is already open in {check.region}",
                             hint="`awsrun quota status` shows it; wait for it to be decided") from None
        if code == "QuotaExceededException":
            raise CloudError(f"too many open quota requests in {check.region}: {aws_message(exc)}",
                             hint="`awsrun quota status` lists them; wait for some to close") from None
        if code in ("IllegalArgumentException", "InvalidResourceStateException"):
            raise CloudError(f"Service Quotas refused the request ({code}): {aws_message(exc)}",
                             hint="raise it in the console (Service Quotas > Amazon EC2) or open a support "
                                  "case") from None
        raise describe_aws_error(exc, "Service Quotas RequestServiceQuotaIncrease",
                                 "servicequotas:RequestServiceQuotaIncrease") from None
    return _request_from(reply["RequestedQuota"], check.region)


def request_status(clients: AwsClients, quota_code: str | None = None) -> list[QuotaRequest]:
    """Pending and past ec2 quota increase requests (of one quota when `quota_code` is given), newest first."""
    if quota_code:
        operation, kwargs = ("list_requested_service_quota_change_history_by_quota",
                             {"ServiceCode": SERVICE_CODE, "QuotaCode": quota_code})
        api = "ListRequestedServiceQuotaChangeHistoryByQuota"
    else:
        operation, kwargs = "list_requested_service_quota_change_history", {"ServiceCode": SERVICE_CODE}
        api = "ListRequestedServiceQuotaChangeHistory"
    requests: list[QuotaRequest] = []
    try:
        for page in clients.quotas.get_paginator(operation).paginate(**kwargs):
            requests.extend(_request_from(item, clients.region) for item in page.get("RequestedQuotas", []))
    except botocore_errors() as exc:
        raise describe_aws_error(exc, f"Service Quotas {api}", f"servicequotas:{api}") from None
    return sorted(requests, key=lambda r: r.created or "", reverse=True)


def _when(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _request_from(item: dict[str, Any], region: str) -> QuotaRequest:
    return QuotaRequest(
        id=item.get("Id", ""), quota_name=item.get("QuotaName", ""), quota_code=item.get("QuotaCode", ""),
        desired=float(item.get("DesiredValue", 0)), status=item.get("Status", "UNKNOWN"),
        created=_when(item.get("Created")), last_updated=_when(item.get("LastUpdated")),
        case_id=item.get("CaseId") or None, region=region,
    )
