"""Pure builders for jobs in named tmux sessions on awsrun's own tmux socket (`tmux -L awsrun`).

Each job has a directory `~/.awsrun/jobs/NAME/` holding `argv` (what ran), `log` (stdout+stderr),
`started_at`, and, once it ends, `exit_code` and `ended_at` (written by a wrapper, since tmux's
remain-on-exit status is unreliable). Every word that reaches a shell is quoted here.
"""
from __future__ import annotations

import re
import shlex
from typing import Mapping, Sequence

from awsrun.errors import ConfigError

SOCKET = "awsrun"
JOBS_ROOT = ".awsrun/jobs"
_SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Runs inside the tmux pane: $1 is the job dir relative to $HOME, the rest the job's argv.
WRAPPER = (
    'd="$HOME/$1"; shift; date +%s > "$d/started_at"; '
    '"$@" 2>&1 | tee -a "$d/log"; code=${PIPESTATUS[0]}; '
    'date +%s > "$d/ended_at.tmp" && mv "$d/ended_at.tmp" "$d/ended_at"; '
    'echo "$code" > "$d/exit_code.tmp" && mv "$d/exit_code.tmp" "$d/exit_code"'
)


def validate_session_name(name: str) -> str:
    if not _SESSION_NAME.match(name):
        raise ConfigError(
            f"session name {name!r} cannot be used: tmux names here are 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit ('.' and ':' have meanings in tmux targets)"
        )
    return name


def validate_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise ConfigError(f"--env {pair!r} must look like NAME=VALUE with NAME a valid variable name")
        env[name] = value
    return env


def tmux(*args: str) -> list[str]:
    return ["tmux", "-L", SOCKET, *args]


def job_dir(name: str) -> str:
    """The job directory relative to $HOME."""
    return f"{JOBS_ROOT}/{validate_session_name(name)}"


def start_job(name: str, workdir: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """One remote shell line: refuse a running session of that name, reset its job dir, start it detached.

    Exit status 17 means a live session of that name already exists. tmux gets the job as separate
    words, which it executes directly (no shell re-parses them).
    """
    validate_session_name(name)
    directory = job_dir(name)
    remote_dir = "~/" + directory
    environment = {"PYTHONUNBUFFERED": "1", **(env or {})}
    job_argv = ["env", *(f"{k}={v}" for k, v in environment.items()), *argv]
    return (
        f"if {shlex.join(tmux('has-session', '-t', '=' + name))} 2>/dev/null; then exit 17; fi; "
        f"rm -rf {remote_dir} && mkdir -p {remote_dir} && "
        f"printf '%s\\0' {shlex.join(list(argv))} > {remote_dir}/argv && "
        f"cd {remote_path(workdir)} && "
        + shlex.join(tmux("new-session", "-d", "-s", name, "-x", "200", "-y", "50",
                          "bash", "-c", WRAPPER, "awsrun-job", directory, *job_argv))
    )


def remote_path(path: str) -> str:
    """Quote a remote path for the shell while letting a leading ~/ expand."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def kill_job(name: str) -> list[str]:
    return tmux("kill-session", "-t", "=" + validate_session_name(name))


def attach_job(name: str) -> list[str]:
    return tmux("attach-session", "-t", "=" + validate_session_name(name))
