"""Job use cases: submit, list, logs, pull, kill, and the argv for attach / ssh / tunnel.

Every function takes a JobHost: the command's one connection to the cluster's head node, plus where
things live on it. Files move with rsync over that connection (awsrun.transfer.rsync): a submit is one SSH
session (awsrun.job.push_launch), rsync whose remote side first refuses when the job runs and launches once
the files are there, or with nothing changed since awsrun's last push there, the target's check of its
tree and the launch; a pull is a listing then the transfer. Where rsync is missing on either side, the
same steps over SFTP (awsrun.transfer.sftp_push, awsrun.transfer.sftp_pull). Listing, logs and kill are one round trip
each.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from awsrun.cluster.access import load_node, open_remote
from awsrun.errors import AwsrunError, ConfigError, NotFoundError, RemoteError
from awsrun.home import Home
from awsrun.job import checkpoints, push_launch, requirements, tmux
from awsrun.job.projects import project_remote_dir, remember_project
from awsrun.remote.base import Remote
from awsrun.remote.target import CLEAR_FORWARDINGS
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, InstanceRecord, JobRecord, State
from awsrun.transfer import pushcache, rsync_pull, sftp_pull, sftp_push
from awsrun.transfer import rsync as transfer
from awsrun.transfer import scan as sync

KILLED_EXIT = 137  # what `submit --follow` exits with when the job was killed (128 + SIGKILL, as shells do)


@dataclass
class JobHost:
    """One connection to where jobs run, and the paths and interpreters to use there."""

    home: Home
    cluster: ClusterRecord
    instance: InstanceRecord
    remote: Remote
    local: bool
    python: str          # runs awsrun's own helper programs on the target
    jobs_root: str       # job directories (see awsrun.job.tmux)
    job_python: str      # the job's interpreter when the venv has none
    venv_python: str     # the job's interpreter when it exists
    remote_dir: str      # projects are synced to remote_dir/<project directory name>
    pip_args: str = ""   # extra pip options for installing a job's requirements.txt
    socket: str = tmux.SOCKET  # the tmux socket of jobs there (one per AWSRUN_HOME on this machine)

    def close(self) -> None:
        self.remote.close()

    def __enter__(self) -> "JobHost":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_host(home: Home, settings: Settings, *, node: int = 0) -> JobHost:
    cluster, instance = load_node(home, settings.cluster, node)
    remote = open_remote(home, settings, cluster, instance)
    venv_python = settings.venv.rstrip("/") + "/bin/python"
    if cluster.provider == "local":
        # this machine: the Python running awsrun is the fallback, so `pip install -e '.[jobs]'` suffices
        return JobHost(home, cluster, instance, remote, True, sys.executable, str(home.root / "jobs"),
                       sys.executable, venv_python, settings.remote_dir, settings.pip_args,
                       tmux.home_socket(str(home.root)))
    return JobHost(home, cluster, instance, remote, False, "python3", tmux.JOBS_ROOT, "python3",
                   venv_python, settings.remote_dir, settings.pip_args)


def check_project_dir(project_dir: Path) -> Path:
    """The directory to sync; never the user's home or the filesystem root (keys, credentials...)."""
    project = Path(os.path.abspath(project_dir))
    if not project.is_dir():
        raise NotFoundError(f"project directory {project} does not exist")
    if project == Path(os.path.abspath(Path.home())) or project.parent == project:
        raise ConfigError(
            f"refusing to sync {project} as a project: it is your home directory or the filesystem root",
            hint="cd into the project (a directory with awsrun.toml, pyproject.toml or .git is found "
                 "automatically), or pass --workdir DIR",
        )
    return project


def resolve_script(script: str, cwd: Path, project_dir: Path) -> str:
    """SCRIPT relative to the cwd, else to the project root, else to the project's jobs/ -> its path
    inside the project (POSIX), refusing one outside it."""
    given = Path(script)
    candidates = [given] if given.is_absolute() else [cwd / given, project_dir / given, project_dir / "jobs" / given]
    project = Path(os.path.abspath(project_dir))
    outside = False
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            return Path(os.path.abspath(candidate)).relative_to(project).as_posix()
        except ValueError:
            outside = True
    if outside:
        raise ConfigError(f"{script} is outside the project {project}, which is what gets synced",
                          hint="move it into the project, or pass --workdir DIR")
    places = ", ".join(dict.fromkeys(str(Path(os.path.abspath(c)).parent) for c in candidates))
    raise NotFoundError(f"no script {script!r} in {places}",
                        hint="SCRIPT is a path from the current directory, the project root or its jobs/, "
                             "e.g. `awsrun submit train_stn.py` from awsrun's own checkout")


def job_argv(script: str, args: tuple[str, ...] | list[str], python: str,
             launcher: tuple[str, ...] | list[str] = ()) -> tuple[list[str], bool]:
    """The job's argv and whether argv[0] is the Python interpreter (replaced by the venv's if any).
    `launcher`: words between the interpreter and the script (`-m torch.distributed.run ...`)."""
    path = "./" + script if script.startswith("-") else script
    if script.endswith(".sh"):
        if launcher:
            raise ConfigError(f"{script} is a shell script: a job on several nodes runs a Python script under torchrun")
        return ["bash", path, *args], False
    return [python, *launcher, path, *args], True


# --- submit ---------------------------------------------------------------------------------------

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
    # the file test first: resubmitting a name whose job ended costs no tmux client
    busy = (f"[ ! -e {directory}/exit_code ] && "
            f"{shlex.join(tmux.tmux('has-session', '-t', '=' + name, socket=host.socket))} 2>/dev/null")
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
        result = _install_then_launch(host, _needs_python(host, result), install, launch)
        return _started(host, request, name, argv, remote_root, tree, report, result, cache, env_file)
    try:  # rsync is missing here or there: the files stream over SFTP, then the same launch as above
        report = sftp_push.push(host.remote, tree, remote_root, busy=busy, on_progress=on_progress)
    except transfer.JobBusy:
        if env_file:
            host.remote.run(f"rm -f {tmux.remote_path(env_file)}")
        raise _running(name, host.cluster.name) from None
    cache.forget()
    links = transfer.link_steps(tree, remote_root)
    result = _needs_python(host, host.remote.run(f"{links} && {{ {start}; }}" if links else start))
    result = _install_then_launch(host, result, install, launch)
    return _started(host, request, name, argv, remote_root, tree, report, result, None, env_file)


def stage_env(host: JobHost, name: str, env: dict[str, str]) -> str:
    path = f"{host.jobs_root.rstrip('/')}/.{name}.env-{os.urandom(6).hex()}"
    host.remote.run(tmux.stage_env_command(path, host.jobs_root), stdin=tmux.env_payload(env)).check(
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


def _needs_python(host: JobHost, result):
    """awsrun's helpers on the instance are Python 3 standard library: say so when it is missing."""
    if result.exit_code == 127 and host.python in result.stderr:
        raise RemoteError(f"{host.python} is not installed on {host.remote.name}: awsrun's sync and job "
                          "helpers need it", hint=f"`awsrun bootstrap --cluster {host.cluster.name}` installs it")
    return result


def _record(host: JobHost, record: JobRecord) -> None:
    state = State.open(host.home.state_db)
    try:
        state.put_job(record)
    finally:
        state.close()


# --- jobs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobStatus:
    name: str
    state: str                     # running | exited | killed
    exit_code: int | None
    started_at: float | None
    ended_at: float | None
    duration: float | None
    command: list[str]
    killed_by_user: bool = False   # `awsrun kill`, as against a session gone with its machine

    @property
    def label(self) -> str:
        return f"exited {self.exit_code}" if self.state == "exited" else self.state

    def as_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "label": self.label, "exit_code": self.exit_code,
                "started_at": self.started_at, "ended_at": self.ended_at, "duration": self.duration,
                "command": self.command}


def job_status(raw: dict, now: float) -> JobStatus:
    """A job's state from what its directory holds (see awsrun.job.tmux) and whether its session is alive."""
    code, started, ended = raw.get("exit_code"), raw.get("started_at"), raw.get("ended_at")
    if raw.get("killed_at") is not None:
        state, ended = "killed", ended or raw["killed_at"]
    elif code is not None:
        state = "exited"
    elif raw.get("alive"):
        state = "running"
    else:
        state = "killed"  # gone without an exit code: its session was killed, or the machine rebooted
    if started is None:
        duration = None
    elif ended is not None:
        duration = max(0.0, ended - started)
    else:
        duration = max(0.0, now - started) if state == "running" else None
    return JobStatus(raw["name"], state, code, started, ended, duration, display_command(raw.get("argv") or []),
                     raw.get("killed_at") is not None)


def display_command(argv: list[str]) -> list[str]:
    """What the user ran: the argv without `env NAME=VALUE...` and with the interpreter's directory."""
    words = list(argv)
    if words[:1] == ["env"]:
        words = words[1:]
        while words and "=" in words[0] and not words[0].startswith("="):
            words = words[1:]
    if words:
        words[0] = PurePosixPath(words[0]).name
    return words


def list_jobs(host: JobHost) -> list[JobStatus]:
    result = _needs_python(host, host.remote.run(tmux.list_jobs(host.python, host.jobs_root, host.socket))).check(
        f"list jobs on {host.remote.name}")
    try:
        data = json.loads(result.stdout)
        return [job_status(raw, data["now"]) for raw in data["jobs"]]
    except (ValueError, KeyError, TypeError):
        raise RemoteError(f"the job list from {host.remote.name} is unreadable: {result.stdout[:200]!r}") from None


def running_sessions(host: JobHost) -> list[str]:
    return [job.name for job in list_jobs(host) if job.state == "running"]


# --- logs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobEnd:
    exit_code: int | None
    killed: bool
    running: bool

    @property
    def status(self) -> int:
        """An exit status for awsrun itself: the job's, KILLED_EXIT when killed, 0 while it runs."""
        if self.exit_code is not None and not self.killed:
            return self.exit_code if 0 <= self.exit_code < 256 else 1
        return KILLED_EXIT if self.killed or not self.running else 0


def logs(host: JobHost, session: str, *, lines: int | None = None, follow: bool = False,
         on_line: Callable[[str], None] | None = None) -> tuple[str, JobEnd]:
    """The log (its last `lines` lines), and with `follow` everything it gains until the job ends.
    With `on_line`, lines go there as they come; the text is returned otherwise."""
    name = tmux.validate_session_name(session)
    if lines is not None and lines < 0:
        raise ConfigError("-n must be 0 or more lines")
    command = tmux.follow_log(name, host.python, lines=lines, follow=follow, jobs_root=host.jobs_root,
                              socket=host.socket)
    if not follow:
        result = host.remote.run(command).check(f"read the log of {name!r} on {host.remote.name}")
        text, status = _split_status(result.stdout)
        if on_line is not None:
            for line in text.splitlines():
                on_line(line)
            text = ""
    else:
        statuses: list[str] = []

        def sink(line: str) -> None:
            if line.startswith(tmux.STATUS_MARK):
                statuses.append(line)
            elif on_line is not None:
                on_line(line)

        result = host.remote.run(command, on_line=sink)
        text = "" if on_line is not None else _split_status(result.stdout)[0]
        status = _parse_status(statuses[-1]) if statuses else None
        if status is None:
            result.check(f"follow the log of {name!r} on {host.remote.name}")
    if status is None:
        raise RemoteError(f"the log of {name!r} on {host.remote.name} ended without the job's state",
                          hint="run the command again")
    if status.get("missing"):
        raise NotFoundError(f"no job named {name!r} on cluster {host.cluster.name!r}",
                            hint="`awsrun jobs` lists them")
    return text, JobEnd(status.get("exit_code"), bool(status.get("killed")), bool(status.get("running")))


def _split_status(stdout: str) -> tuple[str, dict | None]:
    """(the log, the state) from the follow program's output: the state is its last line."""
    index = 0 if stdout.startswith(tmux.STATUS_MARK) else stdout.rfind("\n" + tmux.STATUS_MARK) + 1
    if index == 0 and not stdout.startswith(tmux.STATUS_MARK):
        return stdout, None
    return stdout[:index], _parse_status(stdout[index:].strip())


def _parse_status(line: str) -> dict | None:
    try:
        status = json.loads(line[len(tmux.STATUS_MARK):])
    except ValueError:
        return None
    return status if isinstance(status, dict) else None


# --- pull -----------------------------------------------------------------------------------------

def pull_paths(project_dir: Path, remote_root: str, session: str, *, to: Path | None = None,
               remote_path: str | None = None) -> tuple[str, Path]:
    """(what to read on the target, where to write locally). Default: runs/SESSION both sides."""
    if remote_path is None:
        tmux.validate_session_name(session)
        relative = f"runs/{session}"
    elif remote_path.startswith(("/", "~")):
        relative = None
    else:
        relative = remote_path.strip("/")
        if sync.check_name(relative) is not None:
            raise ConfigError(f"--remote {remote_path!r}: give a plain path inside the project, or an absolute one")
    if relative is not None:
        source = f"{remote_root}/{relative}"
        destination = to if to is not None else project_dir / relative
    else:
        source = remote_path.rstrip("/") or "/"
        name = PurePosixPath(source).name
        if to is None and (not name or name in ("~", ".", "..")):
            raise ConfigError(f"--remote {remote_path!r} has no name to pull into", hint="pass --to DIR")
        destination = to if to is not None else project_dir / name
    return source, destination


def pull(host: JobHost, project_dir: Path, session: str, *, to: Path | None = None,
         remote_path: str | None = None, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
         on_plan: Callable[[rsync_pull.PullPlan], None] | None = None,
         on_progress: transfer.Progress | None = None) -> sync.PullReport:
    """rsync when both sides have it (streams, resumes, sends deltas), else SFTP (streams, skips what is
    already here whole)."""
    remote_root = project_remote_dir(host.remote_dir, project_dir)
    source, destination = pull_paths(project_dir, remote_root, session, to=to, remote_path=remote_path)
    try:
        return rsync_pull.pull(host.remote, source, destination, include=include, exclude=exclude,
                             on_plan=on_plan, on_progress=on_progress)
    except transfer.RsyncMissing:
        return sftp_pull.pull(host.remote, source, destination, include=include, exclude=exclude,
                              on_plan=on_plan, on_progress=on_progress)


# --- kill, attach, ssh, tunnel ------------------------------------------------------------------------

def kill(host: JobHost, session: str, *, force: bool = False, grace_s: float = 10.0) -> None:
    name = tmux.validate_session_name(session)
    result = host.remote.run(tmux.kill_job(name, host.jobs_root, 0.0 if force else grace_s, host.socket))
    if result.exit_code == tmux.EXIT_NOT_RUNNING:
        raise NotFoundError(f"no running job named {name!r} on cluster {host.cluster.name!r}",
                            hint="`awsrun jobs` lists them")
    result.check(f"kill job {name!r} on {host.remote.name}")


def attach_argv(host: JobHost, session: str) -> list[str]:
    """argv of the local process that attaches the user's terminal to the session."""
    name = tmux.validate_session_name(session)
    jobs = {job.name: job for job in list_jobs(host)}
    job = jobs.get(name)
    if job is None:
        raise NotFoundError(f"no job named {name!r} on cluster {host.cluster.name!r}",
                            hint=_nearest(name, [j for j in jobs.values() if j.state == "running"] or list(jobs.values())))
    if job.state != "running":
        raise NotFoundError(f"job {name!r} is not running on cluster {host.cluster.name!r}: it {job.label}",
                            hint=f"`awsrun logs {name}` shows its output; `awsrun jobs` lists jobs")
    return host.remote.interactive_argv(tmux.attach_job(name, host.socket))


def _nearest(name: str, candidates: list[JobStatus]) -> str:
    """A hint for a job name that does not exist: the closest one (a typo), and where the list is."""
    import difflib

    names = [job.name for job in candidates]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}? `awsrun jobs` lists them all"
    if names:
        return f"`awsrun jobs` lists them ({', '.join(repr(n) for n in names[:5])}{', ...' if len(names) > 5 else ''})"
    return "no job was submitted to it yet: `awsrun submit SCRIPT` starts one"


def ssh_argv(host: JobHost, words: tuple[str, ...] | list[str], *, tty: bool) -> list[str]:
    """A login shell, or one command: a single word is a shell command line (as with ssh), several
    words are an argv, each quoted."""
    if not words:
        return host.remote.interactive_argv(None)
    command = words[0] if len(words) == 1 else shlex.join(words)
    argv = host.remote.interactive_argv(command)
    return argv if tty else _without(argv, "-t")


def parse_ports(specs: tuple[str, ...] | list[str]) -> list[tuple[int, int]]:
    """PORT or LOCAL:REMOTE -> (local, remote) pairs."""
    pairs = []
    for spec in specs:
        local, _, remote = spec.partition(":")
        remote = remote or local
        try:
            pair = (int(local), int(remote))
        except ValueError:
            pair = (0, 0)
        if not all(0 < port < 65536 for port in pair):
            raise ConfigError(f"port {spec!r} must be PORT or LOCAL:REMOTE, each 1-65535")
        pairs.append(pair)
    if not pairs:
        raise ConfigError("give at least one port, e.g. `awsrun tunnel 6006`")
    return pairs


def tunnel_argv(host: JobHost, pairs: list[tuple[int, int]]) -> list[str] | None:
    """The system ssh forwarding 127.0.0.1:LOCAL here to 127.0.0.1:REMOTE on the instance, with the same
    key, pinned host key and proxy as every other command. None for the local provider."""
    if host.local:
        return None
    base = _without_pair(_without(_without(host.remote.interactive_argv(None), "-t"), "-q"), CLEAR_FORWARDINGS)
    forwards = [word for local, remote in pairs for word in ("-L", f"127.0.0.1:{local}:127.0.0.1:{remote}")]
    # its own connection, never the kept master: forwards asked of a master belong to the master, so
    # they would outlive this process (Ctrl-C would not close them). ssh keeps the first value given.
    return [base[0], "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ControlPath=none", *forwards, *base[1:]]


def _without_pair(argv: list[str], pair: tuple[str, str]) -> list[str]:
    """argv without one `-o VALUE` pair of ssh's options (the first; the command comes last)."""
    for index in range(1, len(argv) - 2):
        if (argv[index], argv[index + 1]) == pair:
            return argv[:index] + argv[index + 2:]
    return argv


def _without(argv: list[str], option: str) -> list[str]:
    """argv without one of ssh's leading flags (only among the options, never in the command)."""
    if argv[:1] == ["ssh"] and option in argv[1:4]:
        index = argv.index(option, 1)
        return argv[:index] + argv[index + 1:]
    return argv
