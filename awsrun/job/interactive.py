"""The argv of the local processes that put the user's terminal on a node: attach (tmux), ssh (a shell or one command), tunnel (ports forwarded to the node's 127.0.0.1)."""
from __future__ import annotations

import shlex

from awsrun.errors import ConfigError, NotFoundError
from awsrun.job import tmux
from awsrun.job.jobs import JobHost, JobStatus, list_jobs
from awsrun.remote.target import CLEAR_FORWARDINGS


def attach_argv(host: JobHost, session: str) -> list[str]:
    """argv of the local process that attaches the user's terminal to the session."""
    name = tmux.validate_session_name(session)
    jobs = {job.name: job for job in list_jobs(host)}
    job = jobs.get(name)
    if job is None:
        raise NotFoundError(f"no job named {name!r} on cluster {host.cluster.name!r}",
                            hint=_nearest(name, [j for j in jobs.values() if j.state == "running"] or list(jobs.values())))
    if job.state != "running":
        ended = "was killed" if job.state == "killed" else job.label
        raise NotFoundError(f"job {name!r} is not running on cluster {host.cluster.name!r}: it {ended}",
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
