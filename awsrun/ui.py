"""The only module that prints. Plain text for errors and pipes; rich (imported lazily) for tables
and progress on a terminal; JSON when asked."""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import click

from awsrun.errors import AwsrunError, ConfigError


def printable(text: str, keep: str = "") -> str:
    """Text that may come from elsewhere (the instance, EC2, a project's config) as it may reach a
    terminal: control, bidi and other invisible characters shown as Python escapes (ESC -> \\x1b), so
    none can move the cursor, retitle the window or reorder what is shown. `keep` lists those let through."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def _lines(text: str) -> str:
    return printable(text, keep="\n\t")


def _rich_text(text: str):
    """A rich Text, never markup: `[/opt/venv]` or `torch[cuda]` from the instance print as they are."""
    from rich.text import Text

    return Text(printable(text))


def error(exc: AwsrunError) -> None:
    click.echo(f"error: {_lines(exc.message)}", err=True)
    if exc.hint:
        click.echo(f"  hint: {_lines(exc.hint)}", err=True)


def say(message: str) -> None:
    click.echo(_lines(message), err=True)


def out(text: str) -> None:
    click.echo(_lines(text))


def job_output(text: str) -> None:
    """A job's own output (`logs`, `submit --follow`), as the job wrote it: colours, progress bars and all,
    as `tail -f` or `attach` would show them."""
    click.echo(text)


def confirm(command: str, what: str, rerun: str, question: str | None = None) -> None:
    """Go on only if the user says yes: asked on a terminal; elsewhere refused, naming the --yes to add."""
    if not sys.stdin.isatty():
        raise ConfigError(f"`{command}` would {what}: confirm with --yes", hint=rerun)
    click.confirm(question or f"{what}?", abort=True, err=True)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A table on stdout: rich's on a terminal, tab-separated text otherwise (stable for scripts)."""
    cells = [["" if cell is None else printable(str(cell)) for cell in row] for row in rows]
    if not sys.stdout.isatty():
        if title:
            click.echo(f"# {printable(title)}")
        click.echo("\t".join(columns))
        for row in cells:
            click.echo("\t".join(row))
        return
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=_rich_text(title) if title else None, title_justify="left")
    for column in columns:
        grid.add_column(_rich_text(column))
    for row in cells:
        grid.add_row(*(_rich_text(cell) for cell in row))
    Console().print(grid)


@contextmanager
def phase(label: str) -> Iterator["Phase"]:
    """A phase of a long command: a spinner with elapsed time on a terminal, a line otherwise."""
    progress = Phase(label)
    progress.start()
    try:
        yield progress
    except BaseException:
        progress.finish(ok=False)
        raise
    progress.finish()


class Phase:
    def __init__(self, label: str):
        self.label = label
        self.started = time.monotonic()
        self._status = None

    def start(self) -> None:
        if sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status(_rich_text(self.label))
            self._status.start()
        else:
            click.echo(f"{printable(self.label)} ...", err=True)

    def update(self, detail: str) -> None:
        elapsed = time.monotonic() - self.started
        if self._status is not None:
            self._status.update(_rich_text(f"{self.label}: {detail} [{elapsed:.0f}s]"))
        else:
            click.echo(f"  {printable(detail)}", err=True)

    def finish(self, ok: bool = True) -> None:
        if self._status is not None:
            self._status.stop()
        outcome = "done" if ok else "stopped"
        click.echo(f"{printable(self.label)}: {outcome} after {time.monotonic() - self.started:.1f}s", err=True)


class TransferProgress:
    """rsync's progress (bytes, percent, rate, ETA) for a transfer that lasts over a second: one rich status
    line on a terminal, a plain line every few seconds otherwise. Call it with what rsync reports."""

    QUIET_S = 1.0      # shorter transfers show nothing
    PLAIN_EVERY_S = 5.0

    def __init__(self, label: str):
        self.label = label
        self.started = time.monotonic()
        self._status = None
        self._printed = 0.0

    def __call__(self, done: int, percent: int, rate: str, eta: str) -> None:
        now = time.monotonic()
        if now - self.started < self.QUIET_S:
            return
        text = f"{self.label}: {_bytes(done)} ({percent}%), {rate}, ETA {eta}"
        if sys.stderr.isatty():
            if self._status is None:
                from rich.console import Console

                self._status = Console(stderr=True).status(_rich_text(text))
                self._status.start()
            self._status.update(_rich_text(text))
        elif now - self._printed >= self.PLAIN_EVERY_S or percent == 100:
            self._printed = now
            click.echo(f"  {text}", err=True)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __enter__(self) -> "TransferProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
