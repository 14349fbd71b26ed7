"""Cost and autostop verbs: prices, autostop. Parse, call one use case, render."""
from __future__ import annotations

import click

from awsrun import ui
from awsrun.cli.context import AppContext


def _usd(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


@click.command("prices")
@click.option("--gpu", metavar="MODEL", help="Only this GPU model (e.g. T4, A10G, L4, V100, A100, H100).")
@click.option("--region", help="AWS region (default: boto3's chain).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def prices_command(app: AppContext, gpu: str | None, region: str | None, as_json: bool) -> None:
    """GPU instance types with their on-demand and current spot price per zone, cheapest $/GPU-hour first.

    \b
    On-demand: the catalog's list price (dated; shown also offline or without credentials). Spot:
    EC2's current price in each zone of the region (describe_spot_price_history; needs credentials).
    `awsrun up --spot` launches in the cheapest zone.
    """
    from awsrun.account.prices import prices_for
    from awsrun.cluster.context import default_aws

    table = prices_for(app.settings(region=region).region, gpu, default_aws)
    if as_json:
        ui.emit_json(table.to_json())
        return
    rows = []
    for row in table.rows:
        others = ", ".join(f"{zone} {price:.4f}" for zone, price in list(row.spot_usd.items())[1:])
        rows.append((row.instance_type, row.gpu_model, row.gpu_count, row.gpu_memory_gib,
                     _usd(row.on_demand_usd), _usd(row.per_gpu(row.on_demand_usd)),
                     _usd(row.spot_min_usd, 4), row.cheapest_zone or "", _usd(row.per_gpu(row.spot_min_usd), 4),
                     others))
    ui.table(["type", "gpu", "gpus", "GiB/gpu", "on-demand $/h", "$/gpu-h", "spot $/h", "cheapest zone",
              "spot $/gpu-h", "other zones $/h"], rows,
             title=f"{table.region}: on-demand list prices as of {table.prices_as_of} "
                   f"({table.prices_origin or 'awsrun catalog'}); " + ("spot prices now" if table.live_spot else "no spot prices"))
    for note in table.notes:
        ui.say(f"note: {note}")


@click.command("autostop")
@click.argument("duration", metavar="DURATION|off")
@click.option("--cluster", help="Cluster name (default: setting `cluster`, 'default').")
@click.option("--down", is_flag=True, help="Terminate the idle instance instead of stopping it.")
@click.option("--while-ssh", is_flag=True, help="A logged-in SSH user also keeps the instance up.")
@click.option("--gpu-idle", metavar="PERCENT", help="A job whose GPUs all stay below PERCENT (e.g. 5%) counts as idle.")
@click.pass_obj
def autostop_command(app: AppContext, duration: str, cluster: str | None, down: bool, while_ssh: bool,
                     gpu_idle: str | None) -> None:
    """Change a running cluster's autostop: stop (or terminate) it after DURATION without jobs.

    \b
      awsrun autostop 30m          stop after 30 minutes without a running job
      awsrun autostop 2h --down    terminate instead (a persistent spot request is cancelled first)
      awsrun autostop 1h --gpu-idle 5%   a job whose GPUs idle under 5% for the hour counts as idle
      awsrun autostop off          never
    """
    from awsrun.cli.cluster import UiReporter
    from awsrun.cluster.autostop import set_autostop
    from awsrun.errors import ConfigError
    from awsrun.setup.agent import Autostop, parse_duration, parse_percent

    idle = parse_duration(duration)
    percent = parse_percent(gpu_idle, flag="--gpu-idle") if gpu_idle else None
    # this command's own options in the errors (Autostop's checks name `up`'s --autostop-* flags)
    if down and not idle:
        raise ConfigError("--down needs an autostop duration",
                          hint="e.g. `awsrun autostop 30m --down`; `awsrun autostop off` alone turns it off")
    if percent is not None and not idle:
        raise ConfigError("--gpu-idle needs an autostop duration",
                          hint="e.g. `awsrun autostop 1h --gpu-idle 5%`; `awsrun autostop off` alone turns it off")
    setting = Autostop(idle, down, while_ssh, percent)
    settings = app.settings(**({"cluster": cluster} if cluster else {}))
    result = set_autostop(app.home, settings, setting, UiReporter())
    for instance_id, installed in result.agents.items():
        ui.say(f"  agent on {instance_id}: {installed.detail}")
    for instance_id in result.pending:
        ui.say(f"  {instance_id} is not running: its agent gets the setting at `awsrun start` / `awsrun up`")
    ui.say(f"cluster {result.cluster!r}: autostop {result.autostop.describe()}")


COMMANDS: list = [prices_command, autostop_command]
