"""Cluster verbs: up, status, stop, start, down."""
from __future__ import annotations

import click

from awsrun.errors import NotImplementedYet


def _pending(verb: str) -> click.Command:
    @click.command(verb, help=f"(not implemented yet) {verb}", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise NotImplementedYet(f"`awsrun {verb}` is not implemented yet")

    return command


COMMANDS = [_pending(v) for v in ("up", "status", "stop", "start", "down")]
