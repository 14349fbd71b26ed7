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

CLUSTER = click.option("--cluster", help="Cluster to use (default: setting `cluster`).")
PASSTHROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def _size(count: int) -> str:
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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _warn(lines) -> None:
    for line in lines:
        ui.say(f"warning: {line}")


def _open(app: AppContext, cluster: str | None):
    from awsrun.job.jobs import open_host

    settings = app.settings(cluster=cluster)
    return settings, open_host(app.home, settings)


@click.command("submit", context_settings=PASSTHROUGH,
               short_help="Sync the project and run SCRIPT [ARGS] in a detached tmux session on the cluster.")
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--name", "session", help="tmux session name (default: setting `session`, 'work').")
@CLUSTER
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Project directory to sync (default: the project root around the current directory).")
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE", help="Environment for the job (repeatable).")
@click.option("-f", "--follow", is_flag=True, help="Stream the log until the job ends, pull its results, exit with its code.")
@click.option("--pull-on-exit", is_flag=True, help="Wait for the job to end, then pull runs/SESSION.")
@click.option("--resume", is_flag=True,
              help="Continue the previous run in runs/SESSION (its checkpoints) instead of setting it aside.")
@click.option("--json", "as_json", is_flag=True, help="Print what was synced and started as JSON.")
@click.option("--nodes", type=click.IntRange(min=1),
              help="Run SCRIPT under torchrun on nodes 0..N-1 (default: every node of a cluster of several).")
@click.option("--nproc-per-node", type=click.IntRange(min=1),
              help="With several nodes: processes per node (default: the type's GPUs, 1 on CPU).")
@click.option("--rdzv-port", type=click.IntRange(1, 65535),
              help="With several nodes: the head's rendezvous port (default: 29500-29899, from the name).")
@click.option("--checkpoint-bucket", metavar="s3://BUCKET[/PREFIX]",
              help="Mirror runs/SESSION to S3 as the job runs, so `--recover` can resume it on a new instance.")
@click.option("--recover", is_flag=True,
              help="Bring the cluster back (a new instance if EC2 ended it) and resubmit its unfinished "
                   "mirrored jobs from S3 (all, or --name's). Takes no SCRIPT.")
@click.option("--no-bootstrap", is_flag=True, help="With --recover: skip bootstrapping a replacement instance.")
@click.pass_obj
def submit_command(app: AppContext, script: str | None, args: tuple[str, ...], session: str | None,
                   cluster: str | None, workdir: Path | None, env_pairs: tuple[str, ...], follow: bool,
                   pull_on_exit: bool, resume: bool, as_json: bool, nodes: int | None, nproc_per_node: int | None,
                   rdzv_port: int | None, checkpoint_bucket: str | None, recover: bool, no_bootstrap: bool) -> int:
    """Sync the project and run SCRIPT [ARGS]... in a detached tmux session on the cluster.

    SCRIPT is found relative to the current directory, then the project root, then its jobs/. Options
    go before SCRIPT; everything after it is the script's (one of submit's own options there gets a
    warning; `SCRIPT -- ARGS...` passes them on without one). The job runs in the synced copy of the
    project with the venv's python (else python3), AWSRUN_OUTPUT_DIR=runs/SESSION, and outlives
    the connection: `awsrun logs`, `awsrun attach`, `awsrun pull` find it later.

    Each submit is a new run: a previous run's runs/SESSION on the cluster is renamed runs/SESSION.N
    first, unless --resume asks to continue it (from its checkpoints).

    On a cluster of several nodes the job runs on every node (or --nodes N) under torchrun; `logs`
    shows the head's log (--node I another's), `pull` takes the head's (rank 0's) outputs.

    With --checkpoint-bucket (or the setting), runs/SESSION is mirrored to S3 as the job runs; if EC2
    ends the instance, `awsrun submit --recover` launches a replacement and resumes the job from there.
    """
    from awsrun.job import jobs, multinode, tmux
    from awsrun.transfer import scan

    if recover:
        if script is not None or follow or pull_on_exit or nodes or nproc_per_node or rdzv_port or env_pairs \
                or resume:
            raise ConfigError("--recover resubmits the jobs as they were submitted: it takes no SCRIPT, "
                              "--env, --follow, --resume or node options (it always resumes)",
                              hint="awsrun submit --recover [--name SESSION]")
        return _recover(app, cluster, session, checkpoint_bucket, not no_bootstrap, as_json)
    if no_bootstrap:
        raise ConfigError("--no-bootstrap goes with --recover (`awsrun up --no-bootstrap` for a new cluster)")
    if script is None:
        raise ConfigError("submit needs a SCRIPT to run", hint="awsrun submit train_stn.py [ARGS]...")
    args = _script_args(script, args)
    settings = app.settings(cluster=cluster, checkpoint_bucket=checkpoint_bucket)
    name = tmux.validate_session_name(settings.session if session is None else session)
    env = tmux.validate_env(env_pairs)
    project = jobs.check_project_dir(workdir if workdir is not None else app.project_dir)
    relative = jobs.resolve_script(script, app.cwd, project)
    tree = scan.scan(project)
    request = jobs.SubmitRequest(project, relative, tuple(args), name, env, fresh=not resume)
    if nodes is None:
        nodes = multinode.node_count(app.home, settings.cluster)
    if (nodes > 1 or nproc_per_node or rdzv_port) and settings.checkpoint_bucket:
        raise ConfigError("--checkpoint-bucket mirrors one node's outputs; it cannot be used with several nodes yet",
                          hint="submit to one node, or leave the setting checkpoint_bucket out for this job")
    if nodes > 1 or nproc_per_node or rdzv_port:
        _submit_nodes(app, settings, multinode.MultiSubmitRequest(request, nodes, nproc_per_node, rdzv_port), tree,
                      as_json)
        if not (follow or pull_on_exit):
            ui.say(f"  awsrun logs {name} -f  |  awsrun logs {name} --node 1  |  awsrun jobs  |  awsrun pull {name}")
            return 0
        with jobs.open_host(app.home, settings) as head:
            return _follow_and_pull(head, project, name, follow)
    with jobs.open_host(app.home, settings) as host:
        if settings.checkpoint_bucket:
            from awsrun.job import recover as recovery

            with ui.phase(f"preparing the S3 mirror of runs/{name}"):
                result, notes = recovery.submit_mirrored(app.home, settings, host, request, tree)
            for note in notes:
                ui.say(note)
        else:
            with ui.TransferProgress("syncing") as progress:
                result = jobs.submit(host, request, tree, on_progress=progress)
        report = result.sync
        _warn(report.warnings)
        if as_json:
            ui.emit_json({"session": result.session, "cluster": result.cluster, "remote_dir": result.remote_dir,
                          "command": result.command, "sync": report.as_dict()})
        ui.say(f"sync: {_plural(report.files_sent, 'file')} sent ({_size(report.bytes_raw)}, "
               f"{_size(report.bytes_sent)} on the wire), {report.deleted} deleted, {report.unchanged} unchanged "
               f"-> {result.remote_dir}")
        _say_set_aside(name, result.set_aside)
        ui.say(f"started job {name!r} on cluster {result.cluster!r}: "
               f"{' '.join(jobs.display_command(result.command))}")
        if not (follow or pull_on_exit):
            ui.say(f"  awsrun logs {name} -f  |  awsrun attach {name}  |  awsrun pull {name}")
            return 0
        return _follow_and_pull(host, project, name, follow)


def _script_args(script: str, args: tuple[str, ...]) -> tuple[str, ...]:
    """The script's arguments: a leading `--` (pass what follows on as is) is dropped; otherwise a word
    that is one of submit's own options gets a warning, since it goes to the script, not to awsrun."""
    if args[:1] == ("--",):
        return args[1:]
    own = {name for param in click.get_current_context().command.params if isinstance(param, click.Option)
           for name in (*param.opts, *param.secondary_opts)}
    misplaced = list(dict.fromkeys(word.split("=", 1)[0] for word in args
                                   if word.split("=", 1)[0] in own and word.startswith("-")))
    if misplaced:
        goes, it = ("goes", "it") if len(misplaced) == 1 else ("go", "them")
        _warn([f"{', '.join(misplaced)} after {script} {goes} to the script, not to awsrun submit: put {it} "
               f"before {script}, or write `awsrun submit {script} -- ARGS...` to pass {it} on on purpose"])
    return args


def _say_set_aside(name: str, set_aside: str | None, where: str = "") -> None:
    if set_aside:
        ui.say(f"{where}the previous run's runs/{name} is kept as {set_aside}; this run starts anew "
               "(--resume continues a run)")


def _recover(app: AppContext, cluster: str | None, session: str | None, checkpoint_bucket: str | None,
             bootstrap: bool, as_json: bool) -> int:
    from awsrun.cli.cluster import UiReporter
    from awsrun.job import recover as recovery

    if checkpoint_bucket:
        raise ConfigError("--recover uses the bucket each job was submitted with; leave --checkpoint-bucket out")
    settings = app.settings(cluster=cluster)
    result = recovery.recover(app.home, settings, UiReporter(), session=session, bootstrap=bootstrap)
    if as_json:
        ui.emit_json({"cluster": result.cluster, "launched": list(result.launched),
                      "jobs": [{"session": j.session, "outcome": j.outcome, "detail": j.detail} for j in result.jobs]})
    if result.launched:
        ui.say(f"launched {', '.join(result.launched)} in place of the instance EC2 ended")
    for job in result.jobs:
        ui.say(f"job {job.session!r}: {job.outcome}: {job.detail}")
    resubmitted = [j.session for j in result.jobs if j.outcome == "resubmitted"]
    if resubmitted:
        ui.say(f"  awsrun logs {resubmitted[0]} -f  |  awsrun jobs  |  awsrun pull {resubmitted[0]}")
    return 0


def _submit_nodes(app: AppContext, settings, request, tree, as_json: bool) -> None:
    from awsrun.job import jobs, multinode

    def said(node: int, result) -> None:
        report = result.sync
        _warn(report.warnings)
        _say_set_aside(result.session, result.set_aside, f"node {node}: ")
        ui.say(f"node {node}: sync: {_plural(report.files_sent, 'file')} sent ({_size(report.bytes_raw)}), "
               f"{report.unchanged} unchanged -> {result.remote_dir}; started")

    result = multinode.submit(app.home, settings, request, tree, on_node=said)
    if as_json:
        ui.emit_json({"session": result.session, "cluster": result.cluster, "nodes": result.nodes,
                      "nproc_per_node": result.nproc_per_node, "world_size": result.world_size,
                      "rdzv_endpoint": result.endpoint,
                      "per_node": [{"node": n, "command": r.command, "remote_dir": r.remote_dir,
                                    "sync": r.sync.as_dict()} for n, r in enumerate(result.per_node)]})
    ui.say(f"started job {result.session!r} on {result.nodes} nodes of cluster {result.cluster!r} "
           f"({result.nproc_per_node} process(es) each, world size {result.world_size}, rendezvous at "
           f"{result.endpoint}): {' '.join(jobs.display_command(result.per_node[0].command))}")


def _follow_and_pull(host, project: Path, name: str, follow: bool) -> int:
    """submit -f / --pull-on-exit: the log (of the head) until the job ends, then its outputs."""
    from awsrun.job import jobs

    try:
        if follow:
            _, end = jobs.logs(host, name, follow=True, on_line=ui.out)
        else:
            with ui.phase(f"waiting for job {name!r} to end"):
                _, end = jobs.logs(host, name, lines=0, follow=True, on_line=lambda line: None)
    except KeyboardInterrupt:
        return _stopped_following(name)
    ui.say(f"job {name!r} {_end_label(end)}")
    with ui.TransferProgress("pulling") as progress:
        _render_pull(jobs.pull(host, project, name, on_plan=_say_plan, on_progress=progress))
    return end.status


def _stopped_following(name: str) -> int:
    """Ctrl-C while following a log: what the user asked for, not an error; the exit status still says
    the job did not end (130, as for any Ctrl-C)."""
    ui.say(f"stopped following; job {name!r} goes on: `awsrun logs {name} -f` follows it again, "
           f"`awsrun kill {name}` stops it")
    return Interrupted.exit_code


def _end_label(end) -> str:
    if end.killed:
        return "was killed"
    if end.exit_code is not None:
        return f"exited {end.exit_code}"
    return "is still running" if end.running else "is gone without an exit code (killed, or the machine rebooted)"


LARGE_PULL = 100_000_000  # bytes: say what is coming before a pull this big starts


def _say_plan(plan) -> None:
    if plan.bytes_to_fetch >= LARGE_PULL:
        ui.say(f"fetching up to {_size(plan.bytes_to_fetch)} ({_plural(len(plan.fetch) - plan.unchanged, 'file')} "
               f"new or changed; leave some behind with --exclude PATTERN)")


def _render_pull(report) -> None:
    _warn(report.warnings)
    try:
        where = report.destination.relative_to(Path.cwd())
    except ValueError:
        where = report.destination
    ui.say(f"pulled {_plural(report.files, 'file')} ({_size(report.bytes_raw)}, {_size(report.bytes_received)} "
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
            text, end = jobs.logs(host, name, lines=lines, follow=follow, on_line=ui.out if follow else None)
        except KeyboardInterrupt:
            return _stopped_following(name)
    if text:
        ui.out(text[:-1] if text.endswith("\n") else text)
    if follow:
        ui.say(f"job {name!r} {_end_label(end)}")
        return end.status
    return 0


@click.command("attach")
@click.argument("session", required=False)
@CLUSTER
@click.pass_obj
def attach_command(app: AppContext, session: str | None, cluster: str | None) -> None:
    """Attach this terminal to a running job's tmux session (detach: ctrl-b d; the job goes on).

    Without SESSION: the only running job, or a choice among them."""
    from awsrun.job import jobs

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
        argv = jobs.attach_argv(host, session)
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
        _warn(warnings)
        ui.say(summary)
        return
    with jobs.open_host(app.home, settings) as host, ui.TransferProgress("pulling") as progress:
        report = jobs.pull(host, app.project_dir, name, to=to, remote_path=remote_path, include=include,
                           exclude=exclude, on_plan=_say_plan, on_progress=progress)
    if as_json:
        ui.emit_json(report.as_dict())
    _render_pull(report)


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
    from awsrun.job import jobs

    _, host = _open(app, cluster)
    with host:
        argv = jobs.ssh_argv(host, command, tty=sys.stdin.isatty() and sys.stdout.isatty())
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
    from awsrun.job import jobs

    pairs = jobs.parse_ports(ports)
    settings, host = _open(app, cluster)
    with host:
        argv = jobs.tunnel_argv(host, pairs)
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
    _warn(f"left out {line}" for line in skipped)
    ui.say(f"wrote {path}: {', '.join(e.alias for e in entries) or 'no SSH clusters'}")
    user_config = Path.home() / ".ssh" / "config"
    if install:
        changed = sshconfig.install_include(path, user_config)
        ui.say(f"{'added' if changed else 'already there:'} `{sshconfig.include_line(path)}` "
               f"{'to the top of' if changed else 'in'} {user_config}")
    else:
        ui.say(f"to use it: `ssh -F {path} NAME`, or `awsrun ssh-config --install` to add "
               f"`{sshconfig.include_line(path)}` to {user_config}")


COMMANDS = [submit_command, jobs_command, logs_command, attach_command, pull_command, kill_command,
            ssh_command, tunnel_command, ssh_config_command]
