"""`awsrun submit`: parse, build the request (one node, several, or --recover), call the use case, render;
with -f / --pull-on-exit, the log and the pull that follow."""
from __future__ import annotations

from pathlib import Path

import click

from awsrun import ui
from awsrun.cli.context import AppContext
from awsrun.cli.jobs import (
    CLUSTER,
    PASSTHROUGH,
    end_label,
    human_size,
    plural,
    render_pull,
    say_plan,
    stopped_following,
    warn_each,
)
from awsrun.errors import ConfigError, Interrupted


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
    from awsrun.job import environment, jobs, multinode, submission, tmux
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
    env = environment.validate_env(env_pairs)
    project = jobs.check_project_dir(workdir if workdir is not None else app.project_dir)
    relative = jobs.resolve_script(script, app.cwd, project)
    tree = scan.scan(project)
    request = submission.SubmitRequest(project, relative, tuple(args), name, env, fresh=not resume)
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
        try:
            if settings.checkpoint_bucket:
                from awsrun.job import recover as recovery

                with ui.phase(f"preparing the S3 mirror of runs/{name}"):
                    result, notes = recovery.submit_mirrored(app.home, settings, host, request, tree)
                for note in notes:
                    ui.say(note)
            else:
                with ui.TransferProgress("syncing") as progress:
                    result = submission.submit(host, request, tree, on_progress=progress)
        except KeyboardInterrupt:  # the launch rides on the sync's connection: it may have reached the target
            raise Interrupted(f"interrupted while submitting job {name!r}: it may have started",
                              hint=f"`awsrun jobs` shows whether it runs; `awsrun kill {name}` stops it") from None
        report = result.sync
        warn_each(report.warnings)
        if as_json:
            ui.emit_json({"session": result.session, "cluster": result.cluster, "remote_dir": result.remote_dir,
                          "command": result.command, "sync": report.as_dict()})
        ui.say(f"sync: {plural(report.files_sent, 'file')} sent ({human_size(report.bytes_raw)}, "
               f"{human_size(report.bytes_sent)} on the wire), {report.deleted} deleted, {report.unchanged} unchanged "
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
        warn_each([f"{', '.join(misplaced)} after {script} {goes} to the script, not to awsrun submit: put {it} "
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
        warn_each(report.warnings)
        _say_set_aside(result.session, result.set_aside, f"node {node}: ")
        ui.say(f"node {node}: sync: {plural(report.files_sent, 'file')} sent ({human_size(report.bytes_raw)}), "
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
            _, end = jobs.logs(host, name, follow=True, on_line=ui.job_output)
        else:
            with ui.phase(f"waiting for job {name!r} to end"):
                _, end = jobs.logs(host, name, lines=0, follow=True, on_line=lambda line: None)
    except KeyboardInterrupt:
        return stopped_following(name)
    ui.say(f"job {name!r} {end_label(end)}")
    with ui.TransferProgress("pulling") as progress:
        render_pull(jobs.pull(host, project, name, on_plan=say_plan, on_progress=progress))
    return end.status


COMMANDS = [submit_command]
