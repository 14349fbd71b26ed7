"""Job use cases over a JobHost (the command's one connection to the cluster's head node, plus where things
live on it): jobs, logs, pull, kill. Submit is awsrun.job.submission; the argv for attach / ssh / tunnel,
awsrun.job.interactive.

A pull is a listing then the transfer: rsync over the kept connection (awsrun.transfer.rsync_pull), or SFTP
where rsync is missing (awsrun.transfer.sftp_pull). Listing, logs and kill are one round trip each.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from awsrun.cluster.access import load_node, open_remote
from awsrun.errors import ConfigError, NotFoundError, RemoteError
from awsrun.home import Home
from awsrun.job import readers, tmux
from awsrun.job.projects import project_remote_dir
from awsrun.remote.base import Remote
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, InstanceRecord
from awsrun.transfer import rsync as transfer
from awsrun.transfer import rsync_pull, sftp_pull
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
        raise NotFoundError(f"project directory {str(project)!r} does not exist")  # quoted: a newline shows
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


def needs_python(host: JobHost, result):
    """awsrun's helpers on the instance are Python 3 standard library: say so when it is missing."""
    if result.exit_code == 127 and host.python in result.stderr:
        raise RemoteError(f"{host.python} is not installed on {host.remote.name}: awsrun's sync and job "
                          "helpers need it", hint=f"`awsrun bootstrap --cluster {host.cluster.name}` installs it")
    return result


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


# A job's own process can write the files its times and exit code come from (awsrun.job.readers): a value
# that cannot be one (nan, inf, 1e300, before 1970, an exit code past 32 bits) is taken as none.
LAST_EPOCH = 1e10  # 2286-11-20


def _epoch(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < LAST_EPOCH:  # nan fails
        return float(value)
    return None


def _exit_code(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -2**31 <= value < 2**31:
        return value
    return None


def job_status(raw: dict, now: float) -> JobStatus:
    """A job's state from what its directory holds (see awsrun.job.tmux) and whether its session is alive."""
    code = _exit_code(raw.get("exit_code"))
    started, ended, killed = (_epoch(raw.get(name)) for name in ("started_at", "ended_at", "killed_at"))
    if killed is not None:
        state, ended = "killed", ended or killed
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
                     killed is not None)


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
    result = needs_python(host, host.remote.run(readers.list_jobs(host.python, host.jobs_root, host.socket))).check(
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
    command = readers.follow_log(name, host.python, lines=lines, follow=follow, jobs_root=host.jobs_root,
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
            if line.startswith(readers.STATUS_MARK):
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
    return text, JobEnd(_exit_code(status.get("exit_code")), bool(status.get("killed")), bool(status.get("running")))


def _split_status(stdout: str) -> tuple[str, dict | None]:
    """(the log, the state) from the follow program's output: the state is its last line."""
    index = 0 if stdout.startswith(readers.STATUS_MARK) else stdout.rfind("\n" + readers.STATUS_MARK) + 1
    if index == 0 and not stdout.startswith(readers.STATUS_MARK):
        return stdout, None
    return stdout[:index], _parse_status(stdout[index:].strip())


def _parse_status(line: str) -> dict | None:
    try:
        status = json.loads(line[len(readers.STATUS_MARK):])
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


