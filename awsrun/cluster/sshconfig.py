"""`awsrun ssh-config`: an OpenSSH config of awsrun's own, AWSRUN_HOME/ssh_config, with one Host entry per
cluster node, so plain `ssh`, `scp`, `rsync` and editors' remote-SSH reach a cluster by its name. The
entries use what awsrun's SSH layer uses (awsrun.cluster.access): the same key, the same pinned host keys
(UserKnownHostsFile + HostKeyAlias, StrictHostKeyChecking yes) and the same ProxyCommand.

`~/.ssh/config` is only touched with the user's consent (`--install`): one `Include` line at its top.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from awsrun.cluster.access import ssh_target
from awsrun.errors import ConfigError, RemoteError, StateError
from awsrun.home import Home
from awsrun.settings import Settings
from awsrun.state import ClusterRecord, InstanceRecord, State

HEADER = "# Written by `awsrun ssh-config` from awsrun's state; rewritten each time: do not edit.\n"
INCLUDE_COMMENT = "# added by `awsrun ssh-config --install`"
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")


@dataclass(frozen=True)
class HostEntry:
    alias: str
    host_name: str
    port: int
    user: str
    identity_file: str
    known_hosts: str
    host_key_alias: str
    proxy_command: str | None = None
    control_path: str | None = None    # awsrun's kept master for this node (awsrun.remote.openssh), shared
    control_persist: int = 0


def alias_for(cluster: str, node: int) -> str:
    return cluster if node == 0 else f"{cluster}-{node}"


def entry_for(home: Home, settings: Settings, cluster: ClusterRecord, instance: InstanceRecord) -> HostEntry:
    """The Host entry for one node: what awsrun.cluster.access.open_remote connects to (the same SshTarget), written down."""
    from awsrun.cluster.access import persist_seconds
    from awsrun.remote.openssh import Control, socket_name

    target = ssh_target(home, settings, cluster, instance)
    persist = persist_seconds(settings)
    control = Control(home.sockets_dir, socket_name(cluster.name, instance.node, target), persist)
    shared = persist > 0 and control.fits  # plain ssh, scp, rsync then share the master awsrun keeps
    return HostEntry(alias_for(cluster.name, instance.node), target.host, target.port, target.user,
                     str(target.key_path), str(target.known_hosts), target.alias, target.proxy_command,
                     str(control.path) if shared else None, persist if shared else 0)


def collect(home: Home, settings: Settings, state: State) -> tuple[list[HostEntry], list[str]]:
    """Entries for every node of every cluster that SSH reaches, and why the others were left out."""
    entries: list[HostEntry] = []
    skipped: list[str] = []
    for cluster in state.clusters():
        if cluster.provider == "local":
            continue
        for instance in state.instances(cluster.name):
            if instance.state in ("terminated", "shutting-down"):
                continue
            alias = alias_for(cluster.name, instance.node)
            if not _ALIAS.match(alias):
                skipped.append(f"{alias!r}: not usable as an ssh Host name")
                continue
            try:
                entries.append(entry_for(home, settings, cluster, instance))
            except (RemoteError, KeyError) as exc:
                skipped.append(f"{alias}: {exc}")
    seen: set[str] = set()
    unique = []
    for entry in entries:
        if entry.alias in seen:
            skipped.append(f"{entry.alias}: the name is taken by another cluster's node")
            continue
        seen.add(entry.alias)
        unique.append(entry)
    return unique, skipped


def _value(value: str, *, tokens: bool = False) -> str:
    """One config value: quoted when it has spaces; '%' doubled where ssh expands tokens."""
    if any(ch in value for ch in '"\n\r\0'):
        raise ConfigError(f"{value!r} cannot be written into an ssh config (quote or newline)")
    if tokens:
        value = value.replace("%", "%%")
    return f'"{value}"' if any(ch.isspace() for ch in value) or value == "" else value


def render(entries: list[HostEntry]) -> str:
    blocks = [HEADER]
    for e in entries:
        lines = [
            f"Host {e.alias}",
            f"    HostName {_value(e.host_name)}",
            f"    Port {e.port}",
            f"    User {_value(e.user)}",
            f"    IdentityFile {_value(e.identity_file, tokens=True)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {_value(e.known_hosts, tokens=True)}",
            f"    HostKeyAlias {_value(e.host_key_alias)}",
            "    StrictHostKeyChecking yes",
        ]
        if e.proxy_command:
            if any(ch in e.proxy_command for ch in "\n\r\0"):
                raise ConfigError("ssh_proxy_command cannot hold a newline")
            lines.append(f"    ProxyCommand {e.proxy_command}")
        if e.control_path:
            lines += ["    ControlMaster auto", f"    ControlPath {_value(e.control_path, tokens=True)}",
                      f"    ControlPersist {e.control_persist}"]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def write_config(home: Home, settings: Settings) -> tuple[Path, list[HostEntry], list[str]]:
    home.ensure()
    state = State.open(home.state_db)
    try:
        entries, skipped = collect(home, settings, state)
    finally:
        state.close()
    _write_atomic(home.ssh_config, render(entries), 0o600)
    return home.ssh_config, entries, skipped


def include_line(path: Path) -> str:
    return f"Include {_value(str(path))}"


def install_include(awsrun_config: Path, user_config: Path) -> bool:
    """Put `Include AWSRUN_CONFIG` at the top of the user's ssh config (top: an Include after a Host line
    would only apply to that Host). False when it is already there."""
    line = include_line(awsrun_config)
    # a ~/.ssh/config kept as a link into a dotfiles repository stays a link: the file it names is updated
    user_config = Path(os.path.realpath(user_config))
    yourself = f"or add `{line}` at the top of your ssh config yourself"
    existing = ""
    if user_config.exists():
        try:
            existing = user_config.read_text(encoding="utf-8")
        except OSError as exc:
            raise StateError(f"cannot read {user_config}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise StateError(f"{user_config} is not UTF-8 text (byte {exc.start}), so awsrun left it as it was",
                             hint=f"save it as UTF-8 and run `awsrun ssh-config --install` again, {yourself}") from None
        if any(raw.strip() == line for raw in existing.splitlines()):
            return False
    folder = user_config.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # ~/.ssh is there, but not as a directory
        raise StateError(f"{folder} is not a directory, so it cannot hold {user_config.name}",
                         hint=f"move {folder} aside and run `awsrun ssh-config --install` again, {yourself}") from None
    except OSError as exc:
        raise StateError(f"cannot make the directory {folder}: {exc.strerror or exc}",
                         hint=f"fix the permissions of {folder.parent}, {yourself}") from None
    mode = (user_config.stat().st_mode & 0o777) if user_config.exists() else 0o600
    _write_atomic(user_config, f"{INCLUDE_COMMENT}\n{line}\n\n{existing}", mode)
    return True


def _write_atomic(path: Path, text: str, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(temp, mode)
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from None
