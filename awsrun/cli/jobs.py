"""Job verbs: submit, jobs, logs, attach, pull, kill, ssh, tunnel, ssh-config.

Parse, call awsrun.job.jobs (imported inside each command, so `awsrun --help` stays light), render.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click

from awsrun import ui
from awsrun.cli.context import AppContext
from awsrun.errors import ConfigError, Interrupted, NotFoundError
from awsrun.settings import cluster_flag

CLUSTER = click.option("--cluster", help="Cluster to use (default: setting `cluster`).")
PASSTHROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def human_size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else ""


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def warn_each(lines) -> None:
    for line in lines:
        ui.say(f"warning: {line}")


def _open(app: AppContext, cluster: str | None):
    from awsrun.job.jobs import open_host

    settings = app.settings(cluster=cluster)
    return settings, open_host(app.home, settings)


def stopped_following(name: str) -> int:
    """Ctrl-C while following a log: what the user asked for, not an error; the exit status still says
    the job did not end (130, as for any Ctrl-C)."""
    ui.say(f"stopped following; job {name!r} goes on: `awsrun logs {name} -f` follows it again, "
           f"`awsrun kill {name}` stops it")
    return Interrupted.exit_code


def end_label(end) -> str:
    if end.killed:
        return "was killed"
    if end.exit_code is not None:
        return f"exited {end.exit_code}"
    return "is still running" if end.running else "is gone without an exit code (killed, or the machine rebooted)"


LARGE_PULL = 100_000_000  # bytes: say what is coming before a pull this big starts


def say_plan(plan) -> None:
    if plan.bytes_to_fetch >= LARGE_PULL:
        ui.say(f"fetching up to {human_size(plan.bytes_to_fetch)} ({plural(len(plan.fetch) - plan.unchanged, 'file')} "
               f"new or changed; leave some behind with --exclude PATTERN)")


def render_pull(report) -> None:
    warn_each(report.warnings)
    try:
        where = report.destination.relative_to(Path.cwd())
    except ValueError:
        where = report.destination
    ui.say(f"pulled {plural(report.files, 'file')} ({human_size(report.bytes_raw)}, {human_size(report.bytes_received)} "
           f"on the wire) into {where}; {report.unchanged} unchanged")


@click.command("jobs")
@CLUSTER
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def jobs_command(app: AppContext, cluster: str | None, as_json: bool) -> None:
    """Every job on the cluster: running / exited N / killed, start, duration (one round trip).

    On a cluster of several nodes, one row per job across its nodes: failed if any node failed."""
    from awsrun.job import jobs, multinode

    settings = app.settings(cluster=cluster)
    if multinode.node_count(app.home, settings.cluster) > 1:
        gathered = multinode.list_jobs(app.home, settings)
        if as_json:
            ui.emit_json([job.as_dict() for job in gathered])
            return
        ui.table(["session", "state", "nodes", "started", "duration", "command"],
                 [(j.name, j.label, ",".join(str(n) for n, _ in j.nodes), _when(j.started_at), _duration(j.duration),
                   " ".join(j.command)) for j in gathered],
                 title=f"jobs on cluster {settings.cluster}")
        return
    settings, host = _open(app, cluster)
    with host:
        listing = jobs.list_jobs(host)
    if as_json:
        ui.emit_json([job.as_dict() for job in listing])
        return
    from awsrun.job.projects import job_projects

    projects = job_projects(app.home, settings.cluster)  # which local project each remote dir holds
    ui.table(["session", "state", "started", "duration", "command", "project"],
             [(j.name, j.label, _when(j.started_at), _duration(j.duration), " ".join(j.command),
               projects.get(j.name, "")) for j in listing],
             title=f"jobs on cluster {settings.cluster}")


@click.command("logs")
@click.argument("session", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends; exit with its code.")
@click.option("-n", "--lines", type=click.IntRange(min=0), help="Only the last N lines (default: all).")
@click.option("--node", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which node's log, on a cluster of several (0 is the head).")
@CLUSTER
@click.pass_obj
def logs_command(app: AppContext, session: str | None, follow: bool, lines: int | None, node: int,
                 cluster: str | None) -> int:
    """The output of job SESSION (default: setting `session`). Ctrl-C stops following, never the job."""
    from awsrun.job import jobs
    from awsrun.job.tmux import validate_session_name

    settings = app.settings(cluster=cluster)
    name = validate_session_name(settings.session if session is None else session)
    host = jobs.open_host(app.home, settings, node=node)
    with host:
        try:
            text, end = jobs.logs(host, name, lines=lines, follow=follow, on_line=ui.job_output if follow else None)
        except KeyboardInterrupt:
            return stopped_following(name)
    if text:
        ui.job_output(text[:-1] if text.endswith("\n") else text)
    if follow:
        ui.say(f"job {name!r} {end_label(end)}")
        return end.status
    return 0


@click.command("attach")
@click.argument("session", required=False)
@CLUSTER
@click.pass_obj
def attach_command(app: AppContext, session: str | None, cluster: str | None) -> None:
    """Attach this terminal to a running job's tmux session (detach: ctrl-b d; the job goes on).

    Without SESSION: the only running job, or a choice among them."""
    from awsrun.job import interactive, jobs

    settings, host = _open(app, cluster)
    with host:
        if session is None:
            names = jobs.running_sessions(host)
            if not names:
                raise NotFoundError(f"no job is running on cluster {settings.cluster!r}",
                                    hint="`awsrun jobs` lists finished ones; `awsrun submit SCRIPT` starts one")
            if len(names) == 1:
                session = names[0]
            elif sys.stdin.isatty():
                session = click.prompt("attach to", type=click.Choice(names))
            else:
                raise ConfigError(f"{len(names)} jobs are running: {', '.join(names)}", hint="awsrun attach SESSION")
        argv = interactive.attach_argv(host, session)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):  # tmux alone would only say `open terminal failed`
        flag = cluster_flag(settings.cluster, app.settings().cluster)
        raise ConfigError("attach needs a terminal: its standard input and output must be a TTY",
                          hint=f"`awsrun logs -f {session}{flag}` follows the job's output without one")
    ui.say(f"attaching to job {session!r} (detach: ctrl-b d; the job goes on)")
    os.execvp(argv[0], argv)


@click.command("pull")
@click.argument("session", required=False)
@click.option("--to", type=click.Path(file_okay=False, path_type=Path), help="Local directory (default: the same path in the project).")
@click.option("--remote", "remote_path", help="What to bring back instead of runs/SESSION: a path in the synced project, or absolute.")
@CLUSTER
@click.option("--from-s3", is_flag=True,
              help="Read runs/SESSION from the job's S3 mirror (--checkpoint-bucket) instead of the instance.")
@click.option("--include", "include", multiple=True, metavar="PATTERN",
              help="Only what matches (rsync pattern, repeatable), e.g. --include '*.json'.")
@click.option("--exclude", "exclude", multiple=True, metavar="PATTERN",
              help="Leave what matches behind (rsync pattern, repeatable), e.g. --exclude checkpoints/.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def pull_command(app: AppContext, session: str | None, to: Path | None, remote_path: str | None,
                 cluster: str | None, from_s3: bool, include: tuple[str, ...], exclude: tuple[str, ...],
                 as_json: bool) -> None:
    """Bring a job's runs/SESSION (or --remote PATH) back into the project, only what changed.

    Only regular files are written, and only under the destination: absolute names, '..', links,
    devices and names with control characters are skipped with a warning. --from-s3 works when the
    instance is gone."""
    from awsrun.job import jobs
    from awsrun.job.tmux import validate_session_name

    settings = app.settings(cluster=cluster)
    name = settings.session if session is None else session
    if remote_path is None:
        validate_session_name(name)
    if from_s3:
        from awsrun.job.recover import pull_from_mirror

        if remote_path is not None or as_json or include or exclude:
            raise ConfigError("--from-s3 brings back runs/SESSION as mirrored: it takes no --remote, --include, "
                              "--exclude or --json")
        _, destination = jobs.pull_paths(app.project_dir, "", name, to=to)
        with ui.phase(f"pulling runs/{name} from S3"):
            summary, warnings = pull_from_mirror(app.home, settings.cluster, name, destination)
        warn_each(warnings)
        ui.say(summary)
        return
    with jobs.open_host(app.home, settings) as host, ui.TransferProgress("pulling") as progress:
        report = jobs.pull(host, app.project_dir, name, to=to, remote_path=remote_path, include=include,
                           exclude=exclude, on_plan=say_plan, on_progress=progress)
    if as_json:
        ui.emit_json(report.as_dict())
    render_pull(report)


@click.command("kill")
@click.argument("session")
@click.option("--force", is_flag=True, help="End the session at once (default: Ctrl-C first, up to 10 s to checkpoint).")
@CLUSTER
@click.pass_obj
def kill_command(app: AppContext, session: str, force: bool, cluster: str | None) -> None:
    """Stop job SESSION: Ctrl-C (a chance to save a checkpoint), then end its tmux session (on every node)."""
    from awsrun.job import jobs, multinode
    from awsrun.job.tmux import validate_session_name

    validate_session_name(session)
    settings = app.settings(cluster=cluster)
    if multinode.node_count(app.home, settings.cluster) > 1:
        stopped = multinode.kill(app.home, settings, session, force=force)
        ui.say(f"killed job {session!r} on node(s) {', '.join(map(str, stopped))} of cluster {settings.cluster!r}")
        return
    settings, host = _open(app, cluster)
    with host:
        jobs.kill(host, session, force=force)
    ui.say(f"killed job {session!r} on cluster {settings.cluster!r}")


@click.command("ssh", context_settings=PASSTHROUGH)
@CLUSTER
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ssh_command(app: AppContext, cluster: str | None, command: tuple[str, ...]) -> None:
    """A shell on the cluster's head node, or `awsrun ssh -- CMD...` to run one command.

    One word is a shell command line ('nvidia-smi | head'); several are an argv, each word quoted."""
    from awsrun.job import interactive

    _, host = _open(app, cluster)
    with host:
        argv = interactive.ssh_argv(host, command, tty=sys.stdin.isatty() and sys.stdout.isatty())
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@click.command("tunnel", short_help="Forward localhost:PORT to the instance's 127.0.0.1:PORT until Ctrl-C "
                                    "(6006 TensorBoard, 8888 Jupyter).")
@click.argument("ports", nargs=-1, required=True)
@CLUSTER
@click.pass_obj
def tunnel_command(app: AppContext, ports: tuple[str, ...], cluster: str | None) -> int:
    """Forward localhost:PORT to the instance's 127.0.0.1:PORT (PORT or LOCAL:REMOTE, e.g. 6006 for
    TensorBoard, 8888 for Jupyter) until Ctrl-C."""
    from awsrun.job import interactive

    pairs = interactive.parse_ports(ports)
    settings, host = _open(app, cluster)
    with host:
        argv = interactive.tunnel_argv(host, pairs)
    if argv is None:
        ui.say(f"cluster {settings.cluster!r} is this machine: its ports are already local")
        return 0
    for local, remote in pairs:
        ui.say(f"forwarding http://127.0.0.1:{local} -> {settings.cluster}:127.0.0.1:{remote} (Ctrl-C closes)")
    try:
        code = subprocess.run(argv).returncode
    except KeyboardInterrupt:
        ui.say("tunnel closed")
        return 0
    if code != 0:
        ui.say(f"error: the tunnel closed: ssh exited {code} (a port already in use here?)")
    return code


@click.command("ssh-config")
@click.option("--install", is_flag=True, help="Also add `Include AWSRUN_HOME/ssh_config` to the top of ~/.ssh/config.")
@click.pass_obj
def ssh_config_command(app: AppContext, install: bool) -> None:
    """Write AWSRUN_HOME/ssh_config: a Host entry per cluster node, so `ssh CLUSTER`, scp, rsync and
    editors' remote-SSH work (same key, pinned host keys and ProxyCommand as awsrun)."""
    from awsrun.cluster import sshconfig

    path, entries, skipped = sshconfig.write_config(app.home, app.settings())
    warn_each(f"left out {line}" for line in skipped)
    ui.say(f"wrote {path}: {', '.join(e.alias for e in entries) or 'no SSH clusters'}")
    user_config = Path.home() / ".ssh" / "config"
    if install:
        changed = sshconfig.install_include(path, user_config)
        ui.say(f"{'added' if changed else 'already there:'} `{sshconfig.include_line(path)}` "
               f"{'to the top of' if changed else 'in'} {user_config}")
    else:
        ui.say(f"to use it: `ssh -F {path} NAME`, or `awsrun ssh-config --install` to add "
               f"`{sshconfig.include_line(path)}` to {user_config}")


COMMANDS = [jobs_command, logs_command, attach_command, pull_command, kill_command,
            ssh_command, tunnel_command, ssh_config_command]
