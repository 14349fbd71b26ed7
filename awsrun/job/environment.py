"""A job's --env: NAME=VALUE pairs checked, and the 0600 file on the target they reach on stdin (values
may be secrets: never a command line); the start line sources it (awsrun.job.tmux.start_job)."""
from __future__ import annotations

import posixpath
import re
from typing import Mapping, Sequence

from awsrun.errors import ConfigError
from awsrun.job.tmux import JOBS_ROOT, remote_path

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def validate_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise ConfigError(f"--env {pair!r} must look like NAME=VALUE with NAME a valid variable name")
        if "\0" in value:
            raise ConfigError(f"--env {name}: a value cannot contain a NUL byte")
        env[name] = value
    return env


def stage_env_command(path: str, jobs_root: str = JOBS_ROOT) -> str:
    """A shell line writing its stdin (NUL-separated NAME=VALUE pairs) to `path` in the private jobs root:
    how --env values reach the target without appearing on a command line (see start_job's env_file)."""
    root = jobs_root.rstrip("/") or "/"
    return (f"umask 077; mkdir -p {remote_path(root)} && chmod 700 {remote_path(posixpath.dirname(root) or '/')} "
            f"{remote_path(root)} && cat > {remote_path(path)}")


def env_payload(env: Mapping[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
