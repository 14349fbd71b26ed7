"""Small verbs: config, trust."""
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


@click.command("trust")
@click.option("--forget", is_flag=True, help="Stop trusting the project's settings file.")
@click.pass_obj
def trust_command(app: AppContext, forget: bool) -> None:
    """Honour this project's awsrun.toml settings that run commands or widen exposure.

    Those settings (ssh_proxy_command, ssh_cidr, caller_ip_url, checkpoint_bucket, pip_args, torch_spec,
    ssh_key, an ami-... id) in awsrun.toml or [tool.awsrun] are honoured, as the file is now, until it
    changes. Read the file first."""
    from awsrun import trust

    path, entries = trust.trust_project(app.home.root, app.project_dir, forget=forget)
    if forget:
        ui.say(f"{'no longer trusted' if entries else 'was not trusted'}: {path}")
        return
    sensitive = ", ".join(entries) or "none of the settings that need trust"
    ui.say(f"trusted {path} as it is now ({sensitive}); any change to it asks again")


COMMANDS = [config_command, trust_command]
