"""The Click layer: parse, call one use case, render. The only place errors become exit codes."""
from __future__ import annotations

import gc
import importlib
import os
import sys

import click

from awsrun import __version__
from awsrun.cli.context import AppContext
from awsrun.errors import AwsrunError
from awsrun.ui import printable

INTERNAL_ERROR = 70
# Each module's COMMANDS, loaded in this order until the command asked for is found (all of them for
# --help): an everyday job verb imports cli/jobs.py (submit: cli/submit.py with it) and no other.
COMMAND_MODULES = ("submit", "jobs", "cluster", "disks", "bootstrap", "watch", "extras", "doctor", "misc")


class _Commands(click.Group):
    loaded = 0

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._load(until=name)
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's whole first sentence, wrapped (Click cuts it to the line with '...')."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def _load(self, until: str | None = None) -> None:
        while self.loaded < len(COMMAND_MODULES) and (until is None or until not in self.commands):
            module = importlib.import_module(f"awsrun.cli.{COMMAND_MODULES[self.loaded]}")
            for command in module.COMMANDS:
                self.add_command(command)
            self.loaded += 1


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="awsrun")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """awsrun: get a GPU in the cloud, run a training job on it, get the results back, stop paying.

    \b
      awsrun up                    provision an instance and bootstrap it
      awsrun submit train_stn.py   sync the project, start the job in tmux session "work"
      awsrun attach work           re-attach to the live session
      awsrun pull / logs / status  results back, logs, what runs and what it costs
      awsrun stop / down           stop billing (stop keeps the disk; down terminates)
    """
    ctx.obj = AppContext.from_environment()


def main(argv: list[str] | None = None) -> None:
    try:
        _main(sys.argv[1:] if argv is None else argv)
    finally:
        if argv is None:
            # the process ends with this command: what lives now lives until exit, and the
            # interpreter's last collection skips walking it (every module's objects), ~10 ms
            gc.freeze()


def _main(args: list[str]) -> None:
    debug = "--debug" in args or os.environ.get("AWSRUN_DEBUG") == "1"
    try:
        result = cli.main(args=args, prog_name="awsrun", standalone_mode=False)
    except AwsrunError as exc:
        if debug:
            raise
        from awsrun import ui

        exc = _explained(args, exc)
        ui.error(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        message = " ".join(exc.format_message().split())
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "awsrun"
        click.echo(f"error: {printable(message)}", err=True)
        click.echo(f"  hint: `{where} --help` lists its {'commands' if where == 'awsrun' else 'options'}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the last line of defence: never a traceback without --debug
        if debug:
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {printable(str(exc))} "
                   "(run with --debug for the traceback)", err=True)
        sys.exit(INTERNAL_ERROR)
    sys.exit(result if isinstance(result, int) else 0)


def _explained(args: list[str], exc: AwsrunError) -> AwsrunError:
    """An SSH failure on an EC2 cluster becomes what EC2 says happened to the instance (spot reclaim,
    terminated, stopped), with the state updated: see awsrun.cluster.vanished. Anything else stays as it is."""
    from awsrun.errors import RemoteError

    if not isinstance(exc, RemoteError):
        return exc
    try:
        from awsrun.cluster import vanished

        app = AppContext.from_environment()
        return vanished.explain(app.home, app.settings(cluster=_cluster_flag(args)).cluster, exc)
    except Exception:  # the explanation is a bonus: never let it hide the error itself
        return exc


def _cluster_flag(args: list[str]) -> str | None:
    """The --cluster the command was given, read by the command's own parser (never a script's args)."""
    words = list(args)
    while words and words[0].startswith("-"):
        words = words[1:]
    command = cli.get_command(None, words[0]) if words else None  # type: ignore[arg-type]
    if command is None:
        return None
    ctx = command.make_context(words[0], words[1:], resilient_parsing=True)
    return ctx.params.get("cluster")
