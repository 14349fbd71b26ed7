"""`awsrun doctor` and `awsrun quota request|status`: parse, call awsrun.account.doctor / awsrun.account.quota, render.

The core modules (and boto3 behind them) are imported inside the commands, never on the --help path.
"""
from __future__ import annotations

import sys

import click

from awsrun import ui
from awsrun.cli.context import AppContext
from awsrun.errors import ConfigError

MARK = {True: "✓", False: "✗"}


def _can_ask() -> bool:
    """Whether a confirmation can be asked: a terminal on stdin."""
    return sys.stdin.isatty()


def _region_source(flag: str | None) -> str:
    return "--region" if flag else "AWSRUN_REGION / awsrun.toml"


def render_checks(report) -> list[str]:
    """The checklist as text lines: ✓/✗ (⚠ for warnings), the name, the detail, then the fix."""
    width = max(len(check.name) for check in report.checks)
    lines = []
    for check in report.checks:
        mark = "⚠" if check.ok and check.warning else MARK[check.ok]
        lines.append(f"{mark} {check.name.ljust(width)}  {check.detail}")
        if check.fix and (not check.ok or check.warning):
            lines.append(f"  {' ' * width}  fix: {check.fix}")
    return lines


@click.command("doctor")
@click.option("--instance-type", "-t", help="Instance type to check (default: the instance_type setting).")
@click.option("--spot/--on-demand", default=None, help="Check the spot (or on-demand) quota (default: the spot setting).")
@click.option("--count", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Instances the launch needs (the quota must cover their vCPUs).")
@click.option("--region", help="AWS region (default: the region setting, else boto3's chain).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: docs/doctor.md).")
@click.pass_obj
def doctor_command(app: AppContext, instance_type: str | None, spot: bool | None, count: int,
                   region: str | None, as_json: bool) -> None:
    """Check what a launch needs: credentials, region, the type's zones, the GPU vCPU quota, local tools, keys.

    Exits 8 when any check fails; warnings (⚠) do not fail.
    """
    from awsrun.account import doctor
    from awsrun.cluster.failover import candidates as up_candidates

    regions = region if "," in (region or "") else None
    settings = app.settings(instance_type=instance_type, spot=spot, region=None if regions else region,
                            regions=regions)
    tried = up_candidates(settings)  # what `up` would try: the first is the one the other checks look at
    report = doctor.run_checks(
        home=app.home, instance_type=tried[0].instance_type, spot=settings.spot, count=count,
        region=tried[0].region, region_source=_region_source(region), ssh_key=settings.ssh_key,
        candidates=tuple((c.region, c.instance_type) for c in tried),
    )
    if as_json:
        ui.emit_json(report.as_dict())
    else:
        for line in render_checks(report):
            ui.out(line)
    if not report.ok:
        names = ", ".join(check.name for check in report.failed)
        raise doctor.ChecksFailed(f"{len(report.failed)} of {len(report.checks)} checks failed: {names}",
                                  hint="fix the ✗ lines, then run `awsrun doctor` again")


@click.group("quota")
def quota_group() -> None:
    """GPU vCPU quotas: request an increase, follow the requests."""


@quota_group.command("request")
@click.option("--instance-type", "-t", required=True, help="Instance type the quota must cover.")
@click.option("--count", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Instances to run at once.")
@click.option("--spot/--on-demand", default=False, show_default=True, help="The spot or the on-demand quota.")
@click.option("--region", help="AWS region (default: the region setting, else boto3's chain).")
@click.option("--yes", "-y", is_flag=True, help="File the request without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the filed request as JSON.")
@click.pass_obj
def quota_request_command(app: AppContext, instance_type: str, count: int, spot: bool, region: str | None,
                          yes: bool, as_json: bool) -> int:
    """File a Service Quotas increase so COUNT instances of the type fit (asks first unless --yes)."""
    from awsrun.account import quota, quota_requests
    from awsrun.providers.aws_clients import AwsClients, region_flag_for, resolve_region

    settings = app.settings(region=region, instance_type=instance_type)  # validates the type
    region_name = resolve_region(settings.region)
    clients = AwsClients(region_name)
    plan = quota.assess(clients, settings.instance_type, count, spot, region_flag=region_flag_for(settings.region))
    if plan.ok:
        ui.say(f"nothing to request: {plan.summary()}")
        return 0
    desired = quota_requests.desired_value(plan)
    assert plan.quota is not None
    question = (f"Request raising '{plan.quota.name}' ({plan.quota.code}) in {plan.region} from "
                f"{quota.fmt_number(plan.quota.value)} to {desired} vCPUs? ({plan.summary()})")
    if not yes:
        if not _can_ask():
            raise ConfigError("not filing a quota increase request without confirmation: no terminal to ask on",
                              hint=f"add --yes to file it: {plan.request_command} --yes")
        if not click.confirm(question, default=False, err=True):
            ui.say("nothing requested")
            return 1
    filed = quota_requests.request_increase(clients, plan)
    if as_json:
        ui.emit_json(filed.as_dict())
    else:
        ui.out(f"requested {plan.quota.name} -> {quota.fmt_number(filed.desired)} vCPUs in {plan.region}: "
               f"request {filed.id}, status {filed.status}" + (f", case {filed.case_id}" if filed.case_id else ""))
        ui.say("approval takes minutes to a day; `awsrun quota status` follows it")
    return 0


@quota_group.command("status")
@click.option("--instance-type", "-t", help="Only the requests for the quota that governs this type.")
@click.option("--spot/--on-demand", default=False, show_default=True, help="With --instance-type: which quota.")
@click.option("--region", help="AWS region (default: the region setting, else boto3's chain).")
@click.option("--json", "as_json", is_flag=True, help="Print the requests as JSON.")
@click.pass_obj
def quota_status_command(app: AppContext, instance_type: str | None, spot: bool, region: str | None,
                         as_json: bool) -> None:
    """List pending and past EC2 quota increase requests with their state."""
    from awsrun.account import quota, quota_requests
    from awsrun.providers.aws_clients import AwsClients, resolve_region
    from awsrun.setup import catalog

    settings = app.settings(region=region, instance_type=instance_type)  # validates the type
    clients = AwsClients(resolve_region(settings.region))
    code = None
    if instance_type:
        try:
            name = catalog.quota_names(instance_type, spot)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        found = quota.find_quota(clients.quotas, name)
        if found is None:
            raise quota.QuotaUnknown(f"no quota named '{name}' found in Service Quotas for ec2 in {clients.region}")
        code = found.code
    requests = quota_requests.request_status(clients, code)
    if as_json:
        ui.emit_json([r.as_dict() for r in requests])
        return
    if not requests:
        ui.say(f"no EC2 quota increase requests in {clients.region}")
        return
    ui.table(["created", "quota", "desired", "status", "case", "id"],
             [(r.created, f"{r.quota_name} ({r.quota_code})", quota.fmt_number(r.desired), r.status, r.case_id, r.id)
              for r in requests], title=f"EC2 quota requests in {clients.region}")


COMMANDS = [doctor_command, quota_group]
