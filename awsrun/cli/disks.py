"""What disks still bill, as stop, status and down say it, and the verb that deletes a disk left behind."""
from __future__ import annotations

import time

import click

from awsrun import ui
from awsrun.cli.context import AppContext


def gb(size: int | None) -> str | None:
    return None if size is None else f"{size} GB"


def monthly(usd: float | None) -> str:
    return "an unknown amount (no list price for it here)" if usd is None else f"about ${usd:.2f}/month (gp3 list price)"


def delete_hint(disks) -> str:
    """The command that deletes these left-behind disks (region named: their cluster may be gone)."""
    regions = sorted({d.region for d in disks})
    ids = " ".join(d.id for d in disks if d.region == regions[0])
    return f"`awsrun delete-disk {ids} --region {regions[0]}`"


def say_stopped(instance, start: str, down: str) -> None:
    """The note for a stopped instance whose disk still bills: how to resume, how to end the billing."""
    if instance.interrupted:
        resume = f"EC2 restarts it when spot capacity returns (or `{start} --move` moves it)"
    else:
        resume = f"`{start}` resumes it"
    end = f"`{down} --delete-disks` ends it (the disk is kept after `down`)" if instance.disk_kept else f"`{down}` ends it"
    ui.say(f"note: {instance.id} is stopped, and its {gb(instance.disk_gb)} disk still bills "
           f"{monthly(instance.disk_usd_per_month)}: {resume}, {end}")


def say_after_stop(disks, start: str, down: str) -> None:
    from awsrun.cluster.disks import total_usd_per_month

    kept = any(d.kept for d in disks)
    end = f"`{down} --delete-disks` ends it (kept after `down`)" if kept else f"`{down}` ends it"
    ui.say(f"compute billing ended; the {gb(sum(d.size_gb for d in disks))} of disk still bills "
           f"{monthly(total_usd_per_month(disks))}: `{start}` resumes, {end}")


def say_kept(disks) -> None:
    for disk in disks:
        ui.say(f"kept disk {disk.id} ({gb(disk.size_gb)}): it bills {monthly(disk.usd_per_month)} until deleted: "
               f"{delete_hint([disk])} deletes it")


def left_behind_table(disks) -> None:
    ui.table(["disk", "cluster", "owner", "size", "type", "region", "created", "$/month"],
             [(d.id, d.cluster, d.owner, gb(d.size_gb), d.volume_type, d.region,
               time.strftime("%Y-%m-%d", time.localtime(d.created_at)) if d.created_at else None,
               None if d.usd_per_month is None else f"{d.usd_per_month:.2f}") for d in disks],
             title="disks no instance uses (kept after `down` or a `start --move`): they bill until deleted")
    ui.say(f"{delete_hint(disks)} deletes them (your own only), once you have copied what you need")


@click.command("delete-disk")
@click.argument("disk_ids", metavar="DISK_ID...", nargs=-1, required=True)
@click.option("--region", help="The disks' region (`awsrun status` lists them with it).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def delete_disk_command(app: AppContext, disk_ids: tuple[str, ...], region: str | None, yes: bool) -> None:
    """Delete disks awsrun's instances left behind (`up --keep-volume`): your own, used by no instance."""
    from awsrun.cluster.disks import delete_left_behind, find_deletable

    settings = app.settings(region=region)
    disks, provider = find_deletable(settings.region, list(disk_ids))
    what = ", ".join(f"{d.id} ({gb(d.size_gb)}, cluster {d.cluster})" for d in disks)
    if not yes:
        ui.confirm("awsrun delete-disk", f"delete {what} and what it holds",
                   f"awsrun delete-disk {' '.join(d.id for d in disks)} --region {provider.region} --yes")
    delete_left_behind(app.home, provider, disks)
    ui.say(f"deleted {', '.join(d.id for d in disks)} in {provider.region}")


COMMANDS = [delete_disk_command]
