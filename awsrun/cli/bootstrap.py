"""`awsrun bootstrap`: rerun the node bootstrap (driver, venv, PyTorch, requirements, verify) explicitly."""
from __future__ import annotations

import dataclasses

import click

from awsrun import ui
from awsrun.cli.context import AppContext

# Kept here (not imported from awsrun.setup.bootstrap_report) so `awsrun --help` stays light; a test checks they agree.
STEPS = ("packages", "driver", "venv", "torch", "requirements", "verify")


class _Screen:
    """How the script's lines show on screen: protocol lines shortened, our own lines as they are, the
    failure's log tail left to the error message (it carries it), the verify line to the summary."""

    def __init__(self, phase):
        self.phase = phase
        self.failed = False

    def __call__(self, line: str) -> None:
        from awsrun.setup.bootstrap_report import parse_event, parse_verify

        event = parse_event(line)
        if event is not None:
            self.failed = self.failed or event.action == "FAILED"
            detail = f" {event.detail}" if event.detail else ""
            self.phase.update(f"{event.step}: {event.action.lower()}{detail}")
        elif not (self.failed or line.startswith("awsrun bootstrap ") or parse_verify(line) or not line.strip()):
            self.phase.update(line)


@click.command("bootstrap")
@click.option("--cluster", help="Cluster name (default: setting `cluster`, 'default').")
@click.option("--node", type=click.IntRange(0), default=0, show_default=True, help="Which node of the cluster.")
@click.option("--force-step", "force_steps", multiple=True, type=click.Choice(STEPS),
              help="Redo STEP even if it is done (repeatable).")
@click.pass_obj
def bootstrap_command(app: AppContext, cluster: str | None, node: int, force_steps: tuple[str, ...]) -> None:
    """Install the driver, venv and PyTorch on a node again; finished steps are skipped.

    \b
      awsrun bootstrap                           check the default cluster's node 0 (seconds when done)
      awsrun bootstrap --force-step torch        reinstall PyTorch (e.g. after changing torch_spec)
    """
    from awsrun.cluster.access import load_node, open_remote
    from awsrun.setup.bootstrap import bootstrap_node

    # autostop=None: the agent is the cluster's business (recorded by `up`, changed by `awsrun autostop`,
    # EC2 only: it halts the OS, so never on machines awsrun did not launch); a bootstrap leaves it alone
    settings = dataclasses.replace(app.settings(cluster=cluster), autostop=None)
    home = app.home.ensure()
    record, instance = load_node(home, settings.cluster, node)
    log_path = home.logs_dir / f"bootstrap-{record.name}-{node}.log"

    def reconnect():
        return open_remote(home, settings, record, instance, wait_s=settings.ssh_timeout, retry_auth=True)

    remote = open_remote(home, settings, record, instance)
    try:
        with ui.phase(f"bootstrapping {instance.id} (log: {log_path})") as phase:
            report = bootstrap_node(remote, settings, instance_type=instance.instance_type, log_path=log_path,
                                    on_line=_Screen(phase), reconnect=reconnect, force_steps=force_steps)
    finally:
        remote.close()
    ui.table(["step", "outcome", "seconds", "detail"],
             [(s.name, s.outcome, f"{s.seconds:.1f}", s.detail) for s in report.steps],
             title=f"bootstrap of {instance.id}: {report.stack}")
    if report.verify is not None:
        v = report.verify
        ui.out(f"torch {v.torch}, CUDA {'yes' if v.cuda else 'no'}, {v.devices} GPU{'' if v.devices == 1 else 's'} "
               f"({v.name})")
    if report.reboots:
        ui.out(f"rebooted {report.reboots} time{'s' if report.reboots > 1 else ''} to load the NVIDIA driver")
    ui.out(f"done in {report.seconds:.1f}s; log: {log_path}")


COMMANDS: list = [bootstrap_command]
