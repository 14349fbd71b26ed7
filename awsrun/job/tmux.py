"""Pure builders for jobs in named tmux sessions on awsrun's own tmux socket (`tmux -L awsrun` on an
instance; `tmux -L awsrun-<home id>` on this machine, one server per AWSRUN_HOME: see home_socket).

Each job has a directory `JOBS_ROOT/NAME/` (`~/.awsrun/jobs/NAME` on an instance) holding:

    argv        what runs, NUL-separated (`PYTHON SCRIPT ARGS...`), read by the wrapper
    env         the job's environment, NUL-separated NAME=VALUE pairs (0600: --env values can be secrets)
    launch      the shell line that (re)starts the session; the agent reruns it after a spot reboot
    started_at  epoch seconds, written when the job is submitted
    pid         the job's own process id (the wrapper execs it), e.g. for a SIGTERM
    log         stdout+stderr, appended (tee)
    ended_at, exit_code   written by the wrapper when the job ends (tmux's remain-on-exit is unreliable)
    killed_at   written by `awsrun kill` before it stops the session

A job is running while its session exists and it has no exit_code. Every word that reaches a shell is
quoted here; the job's argv travels in a file, so no shell and no tmux message-size limit touches it.
The job directories are private: `~/.awsrun` is 0700 and a job is set up under `umask 077`. A start holds
a lock on the target (`JOBS_ROOT/.NAME.lock`, awsrun.job.start_lock) from its running-check to the new
session, so two submits of one name never both reset the directory: the second finds the first's job
running.
The programs the target runs (listing, log following) are Python 3 standard library, run with the
target's own interpreter: one round trip each.
"""
from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from typing import Mapping, Sequence

from awsrun.errors import ConfigError
from awsrun.job.start_lock import (  # noqa: F401 (EXIT_STARTING: callers read tmux.EXIT_STARTING)
    EXIT_STARTING,
    LOCK_FD,
    under_lock,
)

SOCKET = "awsrun"
JOBS_ROOT = "~/.awsrun/jobs"
EXIT_RUNNING = 17        # start_job: a live session of that name exists
EXIT_NOT_RUNNING = 3     # kill_job: no live session of that name
PRIVATE_MARK = ".private"  # in JOBS_ROOT: start_job made it and its parent 0700
# AWS credentials in the environment of whoever starts a tmux server (awsrun itself, on this machine)
# would reach every job of that server: the server starts without them and the wrapper drops them.
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
              "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE")
SET_ASIDE_MARK = "AWSRUN-SET-ASIDE "  # start_job(fresh=True): the previous outputs' new name follows
_SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

# Runs inside the tmux pane as `bash -c WRAPPER awsrun-job JOBDIR WORKDIR`. It changes to WORKDIR itself:
# tmux would expand `#{...}` and `#(cmd)` in a start directory given with `new-session -c`. The job runs
# under `sh -c` that records its own pid and execs the argv, with the environment of its `env` file
# exported by bash's builtin (no value on any command line), so `pid` is the job itself. Ctrl-C (attach,
# `awsrun kill`) reaches the job, which can checkpoint; the wrapper (trap) and tee (ignores INT) stay to
# record the exit code. Portable to bash 3.2 (macOS) for the local provider: no mapfile, no $BASHPID.
# A job dir with a `mirror` file (argv, NUL-separated) also runs that program beside the job (the S3 mirror
# of its outputs, see awsrun.job.checkpoints; its complaints go to the job's log, where the user looks) and
# waits for it before recording the exit: an ended job's last checkpoint is in S3 by then.
WRAPPER = (
    'd="$1"; unset ' + " ".join(SECRET_ENV) + '; '
    # $3: the job's output directory (relative to its project), made here, by the job's side, not the start
    'if ! cd -- "$2" 2>> "$d/log" || ! { [ -z "$3" ] || mkdir -p -- "$3" 2>> "$d/log"; }; then '
    'date +%s > "$d/ended_at"; echo 1 > "$d/exit_code"; exit 1; fi; '
    'args=(); while IFS= read -r -d "" a; do args+=("$a"); done < "$d/argv"; '
    "trap : INT; mp=; "
    'if [ -f "$d/mirror" ]; then m=(); while IFS= read -r -d "" a; do m+=("$a"); done < "$d/mirror"; '
    '"${m[@]}" >> "$d/mirror.log" 2>> "$d/log" & mp=$!; fi; '
    '( if [ -f "$d/env" ]; then while IFS= read -r -d "" kv; do export "$kv"; done < "$d/env"; fi; '
    'exec sh -c \'echo $$ > "$1"; shift; exec "$@"\' sh "$d/pid" "${args[@]}" ) 2>&1 '
    '| ( trap "" INT; exec tee -a "$d/log" ); '
    "code=${PIPESTATUS[0]}; "
    'if [ -n "$mp" ]; then wait "$mp"; fi; '
    'date +%s > "$d/ended_at.tmp" && mv "$d/ended_at.tmp" "$d/ended_at"; '
    'echo "$code" > "$d/exit_code.tmp" && mv "$d/exit_code.tmp" "$d/exit_code"'
)

def validate_session_name(name: str) -> str:
    if not isinstance(name, str) or not _SESSION_NAME.match(name):
        raise ConfigError(
            f"session name {name!r} cannot be used: tmux names here are 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit ('.' and ':' have meanings in tmux targets)"
        )
    return name


def tmux(*args: str, socket: str = SOCKET) -> list[str]:
    return ["tmux", "-L", socket, *args]


def home_socket(home_root: str) -> str:
    """The tmux socket of jobs on this machine for one AWSRUN_HOME: two homes never share sessions."""
    return f"{SOCKET}-{hashlib.sha256(home_root.encode()).hexdigest()[:10]}"


def remote_path(path: str) -> str:
    """Quote a remote path for the shell while letting a leading ~/ expand."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def job_dir(name: str, jobs_root: str = JOBS_ROOT) -> str:
    """The job directory: `~/...` on an instance (expanded by the target's shell), or absolute."""
    return f"{jobs_root.rstrip('/')}/{validate_session_name(name)}"


def _has_session(name: str, socket: str = SOCKET) -> str:
    return shlex.join(tmux("has-session", "-t", "=" + name, socket=socket)) + " 2>/dev/null"


def _kill_session(name: str, socket: str = SOCKET) -> str:
    return shlex.join(tmux("kill-session", "-t", "=" + name, socket=socket)) + " 2>/dev/null"


def running_test(name: str, jobs_root: str = JOBS_ROOT, socket: str = SOCKET) -> str:
    """A shell test that succeeds while job NAME runs: its dir without exit_code and its session alive. The
    file tests first: a new name, or one whose job ended, costs no tmux client."""
    directory = remote_path(job_dir(name, jobs_root))
    return f"[ -e {directory} ] && [ ! -e {directory}/exit_code ] && {_has_session(name, socket)}"


def launch_line(name: str, workdir: str, jobs_root: str = JOBS_ROOT, socket: str = SOCKET,
                output_dir: str | None = None) -> str:
    """The shell line that starts session NAME running the job whose argv is in its job dir.

    Runnable again as is (the agent does after a spot reboot): it resets nothing. The server stays when
    its last session ends (exit-empty off): the next submit need not start one, and cannot meet one that
    is exiting ("server exited unexpectedly" when a job ended just as the next session started). A server
    this line starts holds no AWS credential of the caller's environment (SECRET_ENV).
    """
    directory = remote_path(job_dir(name, jobs_root))
    # unset, not `env -u`: a start runs inside the submit's round trip, and env would be one more exec
    return (
        f"unset {' '.join(SECRET_ENV)}; "
        + shlex.join([*tmux("new-session", "-d", "-s", name, "-x", "200", "-y", "50", socket=socket),
                      "bash", "-c", WRAPPER, "awsrun-job"])
        + f" {directory} {remote_path(workdir)}{' ' + shlex.quote(output_dir) if output_dir else ''}"
        " \\; set-option -gq exit-empty off"
    )


def start_job(
    name: str,
    workdir: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    jobs_root: str = JOBS_ROOT,
    prefer: str | None = None,
    output_dir: str | None = None,
    mirror: str | None = None,
    socket: str = SOCKET,
    python: str = "python3",
    env_file: str | None = None,
    fresh: bool = False,
) -> str:
    """One shell line: under the target's start lock for NAME, refuse a running session of that name,
    reset its job dir (under umask 077), start it detached.

    Exit status 17 (EXIT_RUNNING) means a live session of that name exists; 16 (EXIT_STARTING) that
    another start of it held the lock too long. `python` runs the lock where flock(1) is missing (awsrun.job.start_lock). `prefer`: an
    executable (the venv's python) that replaces argv[0] when it exists on the target. `output_dir`
    (relative to `workdir`) is given to the job as AWSRUN_OUTPUT_DIR and made by its wrapper (WRAPPER's $3),
    under the job's own umask. `env` reaches the
    job through its 0600 `env` file, but its values are words of this line: secrets go in `env_file`
    instead, a file already on the target (NUL-separated NAME=VALUE) that is moved into the job dir.
    `mirror`: shell words of a program the wrapper runs beside the job (see WRAPPER). `fresh`: a non-empty `output_dir` left by an earlier run
    is renamed OUTPUT_DIR.N (the lowest free N) before the job starts, and the line `SET_ASIDE_MARK
    OUTPUT_DIR.N` printed, so the job starts anew instead of resuming its checkpoints.
    """
    validate_session_name(name)
    if not argv:
        raise ConfigError("a job needs a command")
    directory = remote_path(job_dir(name, jobs_root))
    root = jobs_root.rstrip("/") or "/"
    environment = {"PYTHONUNBUFFERED": "1", **({"AWSRUN_OUTPUT_DIR": output_dir} if output_dir else {}),
                   **(env or {})}
    assignments = [f"{k}={v}" for k, v in environment.items()]
    has, mark = _has_session(name, socket), remote_path(f"{root.rstrip('/')}/{PRIVATE_MARK}")
    lines = [
        # private: ~/.awsrun (the jobs root's parent) and everything a job's setup writes. Made so once (the
        # mark): a start runs inside the submit's round trip, and every program it runs is a fork and an exec
        f"u=$(umask); umask 077; [ -e {mark} ] || {{ mkdir -p {remote_path(root)} && "
        f"chmod 700 {remote_path(posixpath.dirname(root) or '/')} {remote_path(root)} && : > {mark}; }} || exit 1",
        # running: a job dir without exit_code whose session lives. A new name or an ended job asks tmux
        # nothing here: a session of that name that the launch meets is dealt with there (`e`: it had ended)
        f"e=; if [ -e {directory} ]; then if [ -e {directory}/exit_code ]; then e=1; "
        f"elif {has}; then exit {EXIT_RUNNING}; fi; fi",
    ]
    if prefer:
        lines.append(f"p={shlex.quote(argv[0])}; if [ -x {remote_path(prefer)} ]; then p={remote_path(prefer)}; fi")
        words = f"\"$p\" {shlex.join(list(argv[1:]))}".rstrip()
    else:
        words = shlex.join(list(argv))
    if output_dir and fresh:
        lines.append(_set_aside(remote_path(workdir.rstrip('/') + '/' + output_dir), output_dir))
    launch = launch_line(name, workdir, jobs_root, socket, output_dir)
    kill = _kill_session(name, socket)
    # the session met by name: an ended job's, not yet gone (replaced), or one running without its job dir
    launched = (f"{{ {launch} || if {has}; then if [ -n \"$e\" ]; then {kill} && . {directory}/launch; "
                f"else exit {EXIT_RUNNING}; fi; else false; fi; }} {LOCK_FD}>&-")
    lines.append(
        f"{{ [ ! -e {directory} ] || rm -rf {directory}; }} && mkdir -p {directory} && "
        f"printf '%s\\0' {shlex.join(assignments)} > {directory}/env && "
        + (f"cat {remote_path(env_file)} >> {directory}/env && rm -f {remote_path(env_file)} && " if env_file else "")
        + f"printf '%s\\0' {words} > {directory}/argv && "
        + (f"printf '%s\\0' {mirror} > {directory}/mirror && " if mirror else "")
        + f"printf '%s\\n' {shlex.quote(launch)} > {directory}/launch && "
        # bash 5's clock where there is one: a start runs every program it needs, each a fork and an exec
        f"echo \"${{EPOCHSECONDS:-$(date +%s)}}\" > {directory}/started_at && umask \"$u\" && "
        f"{launched}"
    )
    return under_lock(remote_path(f"{root}/.{name}.lock"), remote_path(root), "; ".join(lines), python)


def _set_aside(output_path: str, output_dir: str) -> str:
    """Shell: rename a non-empty OUTPUT to OUTPUT.N (N from 1, the first name free) and say so."""
    return (f"o={output_path}; if [ -d \"$o\" ] && [ -n \"$(ls -A \"$o\" 2>/dev/null)\" ]; then n=1; "
            'while [ -e "$o.$n" ]; do n=$((n+1)); done; '
            f'mv "$o" "$o.$n" && printf \'%s\\n\' {shlex.quote(SET_ASIDE_MARK + output_dir)}."$n"; fi')


def kill_job(name: str, jobs_root: str = JOBS_ROOT, grace_s: float = 10.0, socket: str = SOCKET) -> str:
    """Stop a running job: mark it killed, Ctrl-C it (a checkpoint chance) for up to `grace_s`, then end
    the session. Exit status 3 (EXIT_NOT_RUNNING): no running job of that name."""
    validate_session_name(name)
    directory = remote_path(job_dir(name, jobs_root))
    ticks = max(0, int(grace_s * 10))
    stop = _kill_session(name, socket)
    graceful = ""
    if ticks:
        graceful = (
            f"{shlex.join(tmux('send-keys', '-t', '=' + name + ':', 'C-c', socket=socket))} 2>/dev/null; i=0; "
            f"while {_has_session(name, socket)} && [ ! -e {directory}/exit_code ] && [ $i -lt {ticks} ]; "
            "do sleep 0.1; i=$((i+1)); done; "
        )
    return (
        f"if ! {_has_session(name, socket)} || [ -e {directory}/exit_code ]; then exit {EXIT_NOT_RUNNING}; fi; "
        f"if [ -d {directory} ]; then date +%s > {directory}/killed_at; fi; "
        f"{graceful}{stop}; exit 0"
    )


def stop_idle_server(socket: str = SOCKET) -> str:
    """A shell line that ends awsrun's tmux server when it holds no session (it outlives its last one:
    see launch_line), for `down` on this machine; a server with jobs is left alone."""
    return (f'if [ -z "$({shlex.join(tmux("list-sessions", "-F", "x", socket=socket))} 2>/dev/null)" ]; then '
            f"{shlex.join(tmux('kill-server', socket=socket))} 2>/dev/null; fi; exit 0")


def attach_job(name: str, socket: str = SOCKET) -> list[str]:
    """argv to attach to a session; TMUX is unset so it also works from inside the user's own tmux."""
    return ["env", "-u", "TMUX", *tmux("attach-session", "-t", "=" + validate_session_name(name), socket=socket)]
