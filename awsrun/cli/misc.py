"""Small verbs: config."""
from __future__ import annotations

import dataclasses

import click

from awsrun import ui
from awsrun.cli.context import AppContext
from awsrun.settings import describe_settings


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def config_command(app: AppContext, as_json: bool) -> None:
    """Show the resolved settings (defaults < awsrun.toml < AWSRUN_* < flags) and AWSRUN_HOME."""
    app.home.ensure()
    settings = dataclasses.asdict(app.settings())
    if as_json:
        ui.emit_json({"home": str(app.home.root), "project": str(app.project_dir), "settings": settings})
        return
    docs = {name: doc for name, _, doc in describe_settings()}
    ui.table(["setting", "value", "meaning"], [(k, v, docs[k]) for k, v in settings.items()],
             title=f"project {app.project_dir} · home {app.home.root}")


COMMANDS = [config_command]
