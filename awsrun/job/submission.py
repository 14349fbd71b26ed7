"""Use case: submit. The project goes to the node and the job starts in tmux in ONE SSH session: rsync
with the launch inside its session, or, with nothing changed since awsrun's last push there, the target's
check of its tree and the launch (awsrun.job.push_launch). Where rsync is missing on either side, the files
stream over SFTP (awsrun.transfer.sftp_push) and the same launch follows. Also here: the refusal when a job
of that name runs, the requirements step, and the job's record.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from awsrun.errors import AwsrunError, ConfigError, RemoteError
from awsrun.job import checkpoints, environment, push_launch, requirements, tmux
from awsrun.job.jobs import JobHost, job_argv, needs_python
from awsrun.job.projects import project_remote_dir, remember_project
from awsrun.state import JobRecord, State
from awsrun.transfer import pushcache, sftp_push
from awsrun.transfer import rsync as transfer
from awsrun.transfer import scan as sync


@dataclass(frozen=True)
class SubmitRequest:
    project_dir: Path
    script: str                     # inside the project, POSIX, from resolve_script
    args: tuple[str, ...] = ()
    session: str = "work"
    env: dict[str, str] = field(default_factory=dict)
    launcher: tuple[str, ...] = ()  # between the interpreter and the script: torchrun's words (awsrun.job.multinode)
    mirror: checkpoints.MirrorPlan | None = None  # mirror runs/SESSION to S3 (and restore it first)
    fresh: bool = False             # set a previous run's runs/SESSION aside (runs/SESSION.N) so the job starts anew


@dataclass(frozen=True)
class SubmitResult:
    session: str
    cluster: str
    remote_dir: str
    command: list[str]
    sync: sync.SyncReport
    set_aside: str | None = None    # where a previous run's outputs went (fresh submit), e.g. runs/work.1


class JobRunning(AwsrunError):
    exit_code = 1


def _running(name: str, cluster: str) -> JobRunning:
    return JobRunning(f"job {name!r} is still running on cluster {cluster!r}",
                      hint=f"pick another name (--name NAME), or stop it first: awsrun kill {name}")


def submit(host: JobHost, request: SubmitRequest, tree: sync.LocalTree | None = None,
           on_progress: transfer.Progress | None = None) -> SubmitResult:
    name = tmux.validate_session_name(request.session)
    tree = tree if tree is not None else sync.scan(request.project_dir)
    if request.script not in tree.entries:
        raise ConfigError(f"{request.script} is excluded from the sync (.gitignore, .awsrunignore or awsrun's "
                          "default rules)", hint=f"re-include it with `!{request.script}` in .awsrunignore")
    remote_root = project_remote_dir(host.remote_dir, request.project_dir)
    if host.local:
        _refuse_a_copy_inside(remote_root, request.project_dir)
    argv, is_python = job_argv(request.script, request.args, host.job_python, request.launcher)
    directory = tmux.remote_path(tmux.job_dir(name, host.jobs_root))
    output_dir = f"runs/{name}"
    mirror = request.mirror
    # --env values may be secrets: they reach the target on stdin, into a 0600 file, never a command line
    env_file = stage_env(host, name, request.env) if request.env else None
    start = tmux.start_job(name, remote_root, argv, jobs_root=host.jobs_root, socket=host.socket,
                           python=host.python, env_file=env_file,
                           prefer=host.venv_python if is_python else None, output_dir=output_dir,
                           mirror=checkpoints.follow_words(mirror, output_dir, f"{directory}/pid") if mirror else None,
                           fresh=request.fresh)
    if mirror:
        start = f"{checkpoints.prepare_steps(mirror, f'{remote_root}/{output_dir}')}; {start}"
    launch = start
    install = None
    wanted = requirements.find(request.script, tree.entries) if is_python else None
    if wanted:
        file_digest = requirements.digest(request.project_dir, wanted)
        check = requirements.check_step(remote_root, wanted, file_digest, host.venv_python, host.job_python)
        install = requirements.install_step(remote_root, wanted, file_digest, host.venv_python, host.job_python,
                                            host.pip_args)
        start = f"{check}; {start}"
    # a session of the name without its job dir is met by the start instead, under its lock (tmux.start_job)
    busy = tmux.running_test(name, host.jobs_root, host.socket)
    cache = pushcache.ManifestCache(host.home.root / "manifests", host.cluster.name, host.instance.id, remote_root)
    try:  # one session: rsync with the launch in it, or (nothing changed) the target's check and the launch
        report, result = push_launch.push_and_launch(host.remote, tree, remote_root, busy=busy, launch=start,
                                                     python=host.python, cache=cache, on_progress=on_progress)
    except transfer.JobBusy:
        if env_file:
            host.remote.run(f"rm -f {tmux.remote_path(env_file)}")
        raise _running(name, host.cluster.name) from None
    except transfer.RsyncMissing:
        report = None  # over SFTP below
    if report is not None:
        if result.exit_code == tmux.EXIT_RUNNING and env_file:  # refused before the start took it in
            host.remote.run(f"rm -f {tmux.remote_path(env_file)}")
        result = _install_then_launch(host, needs_python(host, result), install, launch)
        return _started(host, request, name, argv, remote_root, tree, report, result, cache, env_file)
    try:  # rsync is missing here or there: the files stream over SFTP, then the same launch as above
        report = sftp_push.push(host.remote, tree, remote_root, busy=busy, on_progress=on_progress)
    except transfer.JobBusy:
        if env_file:
            host.remote.run(f"rm -f {tmux.remote_path(env_file)}")
        raise _running(name, host.cluster.name) from None
    cache.forget()
    links = transfer.link_steps(tree, remote_root)
    result = needs_python(host, host.remote.run(f"{links} && {{ {start}; }}" if links else start))
    result = _install_then_launch(host, result, install, launch)
    return _started(host, request, name, argv, remote_root, tree, report, result, None, env_file)


def stage_env(host: JobHost, name: str, env: dict[str, str]) -> str:
    path = f"{host.jobs_root.rstrip('/')}/.{name}.env-{os.urandom(6).hex()}"
    host.remote.run(environment.stage_env_command(path, host.jobs_root), stdin=environment.env_payload(env)).check(
        f"send the job's environment to {host.remote.name}")
    return path


def _install_then_launch(host: JobHost, result, install: str | None, launch: str):
    """The launch round trip stopped before launching because the requirements changed: pip runs as a
    step of its own, and only once it reported success does another step launch the job. A Ctrl-C (or a
    lost connection) during pip ends this process, so nothing launches it."""
    if install is None or result.exit_code != requirements.EXIT_NEEDS_INSTALL:
        return result
    installed = host.remote.run(install)
    if not installed.ok:
        return installed
    return host.remote.run(launch)


def _refuse_a_copy_inside(remote_root: str, project_dir: Path) -> None:
    """On this machine the synced copy must not land in the project: every submit would copy the copies."""
    target = Path(os.path.abspath(os.path.expanduser(remote_root)))
    project = Path(os.path.abspath(project_dir))
    if target == project or project in target.parents:
        raise ConfigError(f"remote_dir puts the synced copy at {target}, inside the project {project}: "
                          "each submit would copy the project into itself",
                          hint="set remote_dir outside the project, e.g. AWSRUN_REMOTE_DIR=~/awsrun")


def _started(host: JobHost, request: SubmitRequest, name: str, argv: list[str], remote_root: str,
             tree: sync.LocalTree, report: sync.SyncReport, result,
             cache: pushcache.ManifestCache | None, env_file: str | None = None) -> SubmitResult:
    if result.exit_code == tmux.EXIT_RUNNING:
        raise _running(name, host.cluster.name)
    if result.exit_code == tmux.EXIT_STARTING:
        raise JobRunning(f"job {name!r} is being started by another submit on cluster {host.cluster.name!r}",
                         hint="wait for it, then `awsrun jobs`; or pick another name (--name NAME)")
    if not result.ok:
        if cache is not None:
            cache.forget()
        if env_file:  # the start never took it into a job dir
            host.remote.run(f"rm -f {tmux.remote_path(env_file)}")
    if result.exit_code == checkpoints.EXIT_TOOLS_FAILED:
        raise RemoteError(f"installing boto3 for the checkpoint mirror on {host.remote.name} failed: "
                          f"{_tail(result.stderr)}", hint="check that python3-venv and pip work there (pip_args)")
    if result.exit_code == checkpoints.EXIT_RESTORE_FAILED:
        raise RemoteError(f"restoring the job's checkpoints from S3 on {host.remote.name} failed: {_tail(result.stderr)}",
                          hint="the instance needs its instance profile (awsrun attaches one) and a route to S3")
    if result.exit_code == requirements.EXIT_INSTALL_FAILED:
        raise RemoteError(f"installing the job's requirements on {host.remote.name} failed: {_tail(result.stderr)}",
                          hint="fix requirements.txt (or pip_args), then submit again")
    result.check(f"start job {name!r} on {host.remote.name}")
    if cache is not None:
        cache.save(tree.entries)  # what the target holds now (each file written with its mtime_ns and mode)
    _record(host, JobRecord(host.cluster.name, name, argv, remote_root, time.time()))
    remember_project(host.home, remote_root, request.project_dir)
    set_aside = next((line[len(tmux.SET_ASIDE_MARK):] for line in result.stdout.splitlines()
                      if line.startswith(tmux.SET_ASIDE_MARK)), None)
    return SubmitResult(name, host.cluster.name, remote_root, argv, report, set_aside)


def _tail(stderr: str) -> str:
    return " | ".join(stderr.strip().splitlines()[-3:]) or "no output"


def _record(host: JobHost, record: JobRecord) -> None:
    state = State.open(host.home.state_db)
    try:
        state.put_job(record)
    finally:
        state.close()
