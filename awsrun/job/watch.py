"""TensorBoard and Jupyter Lab on the instance, reached through an SSH tunnel: `awsrun tensorboard`,
`awsrun notebook`.

The classic recipe opened ports 6006 and 8888 to the world in the security group. Here the servers
listen on the instance's 127.0.0.1 only and run as awsrun jobs (awsrun.job.tmux: a named tmux session, a job
directory with argv, log, pid), so `awsrun jobs`, `awsrun logs tensorboard` and `awsrun kill tensorboard`
work on them as on any job. The user reaches them through `ssh -L` (awsrun.job.interactive.tunnel_argv); the local
provider needs no tunnel.

Round trips: one probe (which python, is the package there, is the server already running, which port
is free), then when needed one pip install, one start, one wait until the port answers.
"""
from __future__ import annotations

import re
import secrets
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from typing import Callable

from awsrun.errors import ConfigError, RemoteError
from awsrun.job import tmux
from awsrun.job.jobs import JobHost
from awsrun.job.submission import stage_env
from awsrun.remote.process import stop_process

PORT_SPAN = 50           # how many ports from the asked one are tried, here and on the instance
READY_TIMEOUT_S = 120.0  # a first start imports a lot (TensorBoard: ~5 s; Jupyter Lab: ~5-10 s)
EXIT_GONE = 9            # wait_command: the server's session ended (its log tail follows)
EXIT_SLOW = 8            # wait_command: the port did not answer in time


@dataclass(frozen=True)
class ServerSpec:
    """What to run: a tmux session name, the pip package, the module that shows it is installed."""

    kind: str          # "tensorboard" | "notebook"
    session: str
    package: str
    module: str
    port: int          # asked port: on the instance, and the first one tried here
    logdir: str = "runs"
    token: str = ""

    def argv(self, python: str, port: int) -> list[str]:
        if self.kind == "tensorboard":
            return [python, "-m", "tensorboard.main", "--logdir", self.logdir, "--host", "127.0.0.1",
                    "--port", str(port)]
        # root dir: the job's working directory, the synced project. The token is not a word here: every
        # user of the instance can read a command line (ps); Jupyter takes it from JUPYTER_TOKEN (env()).
        return [python, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                "--port-retries=0"]

    def env(self) -> dict[str, str]:
        return {"JUPYTER_TOKEN": self.token} if self.kind == "notebook" else {}

    def url(self, port: int, token: str = "") -> str:
        base = f"http://127.0.0.1:{port}/"
        return f"{base}lab?token={token}" if self.kind == "notebook" else base


def tensorboard_spec(port: int = 6006, logdir: str = "runs") -> ServerSpec:
    check_port(port)
    if not logdir or "\0" in logdir or "\n" in logdir:
        raise ConfigError(f"--logdir {logdir!r} cannot be used")
    return ServerSpec("tensorboard", "tensorboard", "tensorboard", "tensorboard", port, logdir=logdir)


def notebook_spec(port: int = 8888, token: str | None = None) -> ServerSpec:
    check_port(port)
    return ServerSpec("notebook", "notebook", "jupyterlab", "jupyterlab", port, token=token or secrets.token_hex(24))


def check_port(port: int) -> int:
    if not 0 < port < 65536 - PORT_SPAN:
        raise ConfigError(f"--port {port} must be 1-{65535 - PORT_SPAN}")
    return port


# --- pure builders -----------------------------------------------------------------------------------

def probe_command(spec: ServerSpec, job_python: str, venv_python: str, jobs_root: str = tmux.JOBS_ROOT,
                  socket: str = tmux.SOCKET) -> str:
    """One shell line printing `key=value` lines: python, venv (1 when it is the venv's), installed,
    running (and the running server's argv, one `argv=` line per word, and its token from its 0600 env
    file), free (first free port from spec.port on the target)."""
    directory = tmux.remote_path(tmux.job_dir(spec.session, jobs_root))
    has = shlex.join(tmux.tmux("has-session", "-t", "=" + spec.session, socket=socket))
    find = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({spec.module!r}) is None)"
    return _bash(
        f"py={shlex.quote(job_python)}; venv=0; "
        f"if [ -x {tmux.remote_path(venv_python)} ]; then py={tmux.remote_path(venv_python)}; venv=1; fi; "
        'echo "python=$py"; echo "venv=$venv"; '
        f'if "$py" -c {shlex.quote(find)} 2>/dev/null; then echo installed=1; else echo installed=0; fi; '
        f"if {has} 2>/dev/null && [ ! -e {directory}/exit_code ] && [ -e {directory}/argv ]; then "
        f"echo running=1; tr '\\0' '\\n' < {directory}/argv | sed 's/^/argv=/'; "
        f"tr '\\0' '\\n' < {directory}/env 2>/dev/null | sed -n 's/^JUPYTER_TOKEN=/token=/p'; "
        "else echo running=0; fi; "
        f"p={spec.port}; while [ $p -lt {spec.port + PORT_SPAN} ] && "
        '(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p+1)); done; echo "free=$p"'
    )


@dataclass(frozen=True)
class Probe:
    python: str
    venv: bool
    installed: bool
    running: bool
    argv: tuple[str, ...]
    free_port: int
    token: str = ""


def parse_probe(stdout: str) -> Probe:
    values: dict[str, str] = {}
    argv: list[str] = []
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "argv":
            argv.append(value)
        else:
            values.setdefault(key, value)
    try:
        return Probe(values["python"], values["venv"] == "1", values["installed"] == "1",
                     values["running"] == "1", tuple(argv), int(values["free"]), values.get("token", ""))
    except (KeyError, ValueError):
        raise RemoteError(f"the server probe's answer is unreadable: {stdout[:200]!r}") from None


def running_port_and_token(argv: tuple[str, ...] | list[str]) -> tuple[int | None, str]:
    """The port and token of a server this module started, read back from its job's argv."""
    port, token = None, ""
    words = list(argv)
    for index, word in enumerate(words):
        if word == "--port" and index + 1 < len(words) and words[index + 1].isdigit():
            port = int(words[index + 1])
        elif (match := re.fullmatch(r"--port=(\d+)", word)):
            port = int(match.group(1))
        elif word.startswith("--IdentityProvider.token="):
            token = word.split("=", 1)[1]
    return port, token


def install_command(python: str, package: str, pip_args: str) -> list[str]:
    return [python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--progress-bar", "off",
            *shlex.split(pip_args), package]


def wait_command(session: str, port: int, jobs_root: str = tmux.JOBS_ROOT, timeout_s: float = READY_TIMEOUT_S,
                 log_lines: int = 20, socket: str = tmux.SOCKET) -> str:
    """Wait on the target until 127.0.0.1:PORT accepts a connection; exit EXIT_GONE with the log's tail
    when the server's session ends first, EXIT_SLOW after `timeout_s`."""
    directory = tmux.remote_path(tmux.job_dir(session, jobs_root))
    has = shlex.join(tmux.tmux("has-session", "-t", "=" + session, socket=socket))
    ticks = max(1, int(timeout_s * 5))
    return _bash(
        f"i=0; while [ $i -lt {ticks} ]; do "
        f'if (exec 3<>"/dev/tcp/127.0.0.1/{port}") 2>/dev/null; then exit 0; fi; '
        f"if [ -e {directory}/exit_code ] || ! {has} 2>/dev/null; then "
        f"tail -n {log_lines} {directory}/log 2>/dev/null; exit {EXIT_GONE}; fi; "
        f"sleep 0.2; i=$((i+1)); done; tail -n {log_lines} {directory}/log 2>/dev/null; exit {EXIT_SLOW}"
    )


def _bash(script: str) -> str:
    """/dev/tcp is bash's: run the script with bash whatever the login shell is."""
    return shlex.join(["bash", "-c", script])


def free_local_port(first: int, span: int = PORT_SPAN) -> int:
    """The first port from `first` that 127.0.0.1 here can listen on."""
    for port in range(first, min(first + span, 65536)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ConfigError(f"ports {first}-{first + span - 1} are all taken here", hint="pass --port PORT")


# --- the use case ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Served:
    spec: ServerSpec
    cluster: str
    remote_port: int        # where the server listens on the instance (127.0.0.1)
    token: str
    reused: bool            # it was already running
    installed: bool         # this call pip-installed the package
    workdir: str            # its working directory on the instance (the synced project)

    def url(self, local_port: int) -> str:
        return self.spec.url(local_port, self.token)


def serve(host: JobHost, spec: ServerSpec, workdir: str, pip_args: str = "",
          progress: Callable[[str], None] = lambda message: None) -> Served:
    """Make sure the server runs on the instance (installing its package into the venv if needed, or
    reusing a running one) and answers on 127.0.0.1 there."""
    probe = parse_probe(host.remote.run(probe_command(spec, host.job_python, host.venv_python, host.jobs_root,
                                                      host.socket))
                        .check(f"look for {spec.kind} on {host.remote.name}").stdout)
    if probe.running:
        port, token = running_port_and_token(probe.argv)
        token = probe.token or token  # in its env file; in the argv of a server an older awsrun started
        if port is None:
            raise RemoteError(f"a job named {spec.session!r} runs on cluster {host.cluster.name!r} but is not "
                              f"awsrun's {spec.kind}", hint=f"stop it first: awsrun kill {spec.session}")
        progress(f"{spec.kind} is already running on {host.cluster.name} (port {port}): reusing it")
        _wait(host, spec, port)
        return Served(spec, host.cluster.name, port, token, True, False, workdir)
    installed = False
    if not probe.installed:
        if not probe.venv and not host.local:
            raise RemoteError(f"{spec.package} is not installed and there is no venv at {host.venv_python} "
                              f"on {host.remote.name}",
                              hint=f"`awsrun bootstrap --cluster {host.cluster.name}` creates the venv")
        if not probe.venv:  # this machine's own Python, not awsrun's venv: never changed behind the user's back
            raise ConfigError(f"{spec.package} is not installed in {probe.python}, the Python awsrun runs with "
                              "on this machine, and awsrun does not install packages into it",
                              hint=f"`{probe.python} -m pip install {spec.package}` installs it there; or "
                                   f"`awsrun bootstrap --cluster {host.cluster.name}` makes awsrun's own venv")
        progress(f"installing {spec.package} into {probe.python} on {host.cluster.name}")
        host.remote.run(install_command(probe.python, spec.package, pip_args)).check(
            f"pip install {spec.package} on {host.remote.name}")
        installed = True
    port = probe.free_port
    if port >= spec.port + PORT_SPAN:
        raise RemoteError(f"ports {spec.port}-{port - 1} are all taken on {host.remote.name}",
                          hint="pass --port PORT")
    if port != spec.port:
        progress(f"port {spec.port} is taken on {host.cluster.name}: {spec.kind} listens on {port} there")
    env_file = stage_env(host, spec.session, spec.env()) if spec.env() else None
    start = tmux.start_job(spec.session, workdir, spec.argv(probe.python, port), jobs_root=host.jobs_root,
                           socket=host.socket, python=host.python, env_file=env_file)
    # `service`: the autostop agent does not count a server as work, so an idle instance still stops
    service = tmux.remote_path(tmux.job_dir(spec.session, host.jobs_root) + "/service")
    result = host.remote.run(f"mkdir -p {tmux.remote_path(workdir)} && {{ {start}; }} && : > {service}")
    if not result.ok and env_file:  # the start never took the token into a job dir
        host.remote.run(f"rm -f {tmux.remote_path(env_file)}")
    if result.exit_code == tmux.EXIT_RUNNING:  # started by someone else since the probe
        return serve(host, spec, workdir, pip_args, progress)
    result.check(f"start {spec.kind} on {host.remote.name}")
    progress(f"started {spec.kind} in tmux session {spec.session!r}; waiting for port {port} to answer")
    _wait(host, spec, port)
    return Served(replace(spec, port=port), host.cluster.name, port, spec.token, False, installed, workdir)


def _wait(host: JobHost, spec: ServerSpec, port: int) -> None:
    result = host.remote.run(wait_command(spec.session, port, host.jobs_root, socket=host.socket))
    if result.exit_code == 0:
        return
    tail = " | ".join(line for line in result.stdout.strip().splitlines()[-5:] if line.strip()) or "no output"
    if result.exit_code == EXIT_GONE:
        raise RemoteError(f"{spec.kind} exited on {host.cluster.name}: {tail}",
                          hint=f"`awsrun logs {spec.session}` shows its whole log")
    if result.exit_code == EXIT_SLOW:
        raise RemoteError(f"{spec.kind} did not answer on port {port} within {READY_TIMEOUT_S:.0f}s: {tail}",
                          hint=f"`awsrun logs {spec.session}` shows its log; `awsrun kill {spec.session}` stops it")
    result.check(f"wait for {spec.kind} on {host.remote.name}")


# --- the tunnel --------------------------------------------------------------------------------------

def open_tunnel(argv: list[str], local_port: int, timeout_s: float = 30.0) -> subprocess.Popen:
    """Start the system ssh forwarding (awsrun.job.interactive.tunnel_argv) and return once 127.0.0.1:LOCAL accepts
    connections here. ssh's stdin is /dev/null and its stderr is kept for the error message."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            detail = (process.stderr.read().decode(errors="replace").strip() if process.stderr else "")
            raise RemoteError(f"the tunnel did not open: ssh exited {process.returncode}: "
                              f"{' | '.join(detail.splitlines()[-3:]) or 'no output'}",
                              hint="is the local port taken by now? run the command again")
        try:
            with socket.create_connection(("127.0.0.1", local_port), timeout=1):
                return process
        except OSError:
            pass
        if time.monotonic() > deadline:
            close_tunnel(process)
            raise RemoteError(f"the tunnel to port {local_port} did not open within {timeout_s:.0f}s")
        time.sleep(0.05)


def close_tunnel(process: subprocess.Popen) -> None:
    stop_process(process, grace_s=5)
