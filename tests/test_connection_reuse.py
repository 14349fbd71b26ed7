"""The kept SSH connection (OpenSSH ControlMaster in AWSRUN_HOME/sockets): reuse across commands, idle
exit, stale-socket recovery, `down` closing it, socket modes, the pinned host key, and `ssh_persist`
off. No timing assertions: the master's pid and socket say what happened. Loopback sshd hosts."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from awsrun.remote.openssh import (
    SOCKET_PATH_MAX,
    Control,
    close_masters,
    master_pid,
    parse_persist,
    socket_name,
)
from awsrun.remote.target import SshTarget
from tests.harness.clusters import ssh_cluster, wait_for  # noqa: F401 (fixture)


@pytest.fixture(params=["short-home", "long-home"])
def awsrun_home(request, tmp_path: Path):
    """A short AWSRUN_HOME (absolute socket paths), and one too long for a unix socket path (ssh is run
    from the sockets directory with a relative path)."""
    if request.param == "short-home":
        home = Path(tempfile.mkdtemp(prefix="awr-", dir="/tmp"))
        os.chmod(home, 0o700)
        yield home
        close_masters(home / "sockets", None)
        shutil.rmtree(home, ignore_errors=True)
    else:
        home = tmp_path / ("h" * 60) / "awsrun-home"
        home.mkdir(parents=True, mode=0o700)
        yield home
        close_masters(home / "sockets", None)


def sockets(home: Path) -> list[Path]:
    directory = home / "sockets"
    return sorted(p for p in directory.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)) if directory.is_dir() else []


def the_master(home: Path) -> tuple[Path, int]:
    [path] = sockets(home)
    pid = master_pid(Control(path.parent, path.name, 0))
    assert pid, f"no master answers on {path}"
    return path, pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def kill_sessions(listener: int) -> int:
    """SIGKILL every process below the host's sshd listener (each connection's monitor and its
    unprivileged child, which holds the socket): the host side of every connection is gone."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
    below, frontier = set(), {listener}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - below
        below |= frontier
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(below)


def ok(result):
    assert result.exit_code == 0, result
    return result


def test_first_contact_pins_then_commands_share_one_master(cli, ssh_cluster, awsrun_home):
    ok(cli("ssh", "--", "true"))                  # first contact: paramiko pins the host key, keeps nothing
    assert (awsrun_home / "known_hosts").read_text().strip()
    assert sockets(awsrun_home) == []
    ok(cli("ssh", "--", "true"))                  # an exec'd terminal never becomes a master either
    assert sockets(awsrun_home) == []
    assert ok(cli("jobs")).stdout                 # the first everyday command opens the master
    path, pid = the_master(awsrun_home)
    assert path.name.startswith("default.0.")
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert stat.S_IMODE((awsrun_home / "sockets").stat().st_mode) == 0o700
    (cli.cwd / "job.py").write_text("print('through the master')\n")
    ok(cli("submit", "job.py"))
    wait_for(lambda: "through the master" in cli("logs", "work").stdout, timeout=30, what="the job's output")
    assert "hi there" in ok(cli("ssh", "--", "echo", "hi there")).stdout
    assert the_master(awsrun_home) == (path, pid)  # the same master served every command


def test_master_exits_after_idle_persist(cli, ssh_cluster, awsrun_home):
    ok(cli("ssh", "--", "true"))
    ok(cli("jobs", env={"AWSRUN_SSH_PERSIST": "2s"}))
    path, pid = the_master(awsrun_home)
    wait_for(lambda: not path.exists() and not alive(pid), timeout=60, what="the idle master to exit")
    ok(cli("jobs", env={"AWSRUN_SSH_PERSIST": "2s"}))  # and the next command simply opens a new one


def test_killed_master_leaves_a_stale_socket_that_the_next_command_replaces(cli, ssh_cluster, awsrun_home):
    ok(cli("ssh", "--", "true"))
    ok(cli("jobs"))
    path, pid = the_master(awsrun_home)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), timeout=10, what="the master to die")
    assert path.exists()                          # the socket is stale now
    assert ok(cli("jobs")).stdout
    new_path, new_pid = the_master(awsrun_home)
    assert new_path == path and new_pid != pid


def test_dropped_connection_falls_back_to_a_fresh_one(cli, ssh_cluster, awsrun_home):
    """The host side goes away (every sshd session killed, as when the instance reboots)."""
    ok(cli("ssh", "--", "true"))
    ok(cli("jobs"))
    _, pid = the_master(awsrun_home)
    assert kill_sessions(ssh_cluster.host.process.pid) >= 1
    wait_for(lambda: not alive(pid), timeout=30, what="the master to notice")
    (cli.cwd / "job.py").write_text("print('after the drop')\n")
    ok(cli("submit", "job.py"))
    assert the_master(awsrun_home)[1] != pid


def test_down_closes_the_clusters_masters(cli, ssh_cluster, awsrun_home):
    ok(cli("ssh", "--", "true"))
    ok(cli("jobs"))
    path, pid = the_master(awsrun_home)
    ok(cli("down", "--yes"))
    wait_for(lambda: not alive(pid), timeout=10, what="the master to exit")
    assert not path.exists()


def test_ssh_persist_off_keeps_nothing(cli, ssh_cluster, awsrun_home):
    ok(cli("ssh", "--", "true"))
    ok(cli("jobs", env={"AWSRUN_SSH_PERSIST": "off"}))
    assert sockets(awsrun_home) == []


def test_changed_host_key_is_refused_on_the_everyday_path(cli, ssh_cluster, awsrun_home):
    ok(cli("ssh", "--", "true"))
    known = awsrun_home / "known_hosts"
    alias, key_type, _ = known.read_text().split()
    other = Path(tempfile.mkdtemp()) / "k"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    known.write_text(f"{alias} {key_type} {other.with_suffix('.pub').read_text().split()[1]}\n")
    result = cli("jobs")
    assert result.exit_code != 0
    assert "host key" in result.stderr and "ssh-keygen -R" in result.stderr, result
    assert sockets(awsrun_home) == []


# --- builders --------------------------------------------------------------------------------------

def test_parse_persist():
    assert [parse_persist(v) for v in ("10m", "90s", "1h", "600", "0", "off", "", None)] == \
        [600, 90, 3600, 600, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        parse_persist("soon")


def test_socket_names_and_paths():
    target = SshTarget(host="10.0.0.2", user="ubuntu", key_path=Path("/k"), known_hosts=Path("/kh"), alias="i-1")
    name = socket_name("train", 1, target)
    assert name.startswith("train.1.") and len(name) == len("train.1.") + 12
    assert socket_name("train", 1, SshTarget(**{**target.__dict__, "proxy_command": "nc %h %p"})) != name
    short = Control(Path("/tmp/s"), name, 600)
    assert short.options() == (["-o", "ControlMaster=auto", "-o", f"ControlPath=/tmp/s/{name}",
                                "-o", "ControlPersist=600"], None)
    assert short.options("no") == (["-o", "ControlMaster=no", "-o", f"ControlPath=/tmp/s/{name}"], None)
    deep = Control(Path("/" + "d" * SOCKET_PATH_MAX), name, 60)
    assert deep.options() == (["-o", "ControlMaster=auto", "-o", f"ControlPath={name}", "-o", "ControlPersist=60"],
                              deep.directory)
    assert deep.options("no", absolute_only=True) == ([], None)


def test_stop_closes_the_master_of_an_ec2_cluster_and_up_opens_one_on_the_ready_instance(cli, ec2, fleet, awsrun_home):
    ok(cli("up", "--ssh-cidr", "203.0.113.7/32", "--no-bootstrap"))   # first contact: paramiko pins the key
    assert sockets(awsrun_home) == []
    ok(cli("up", "--ssh-cidr", "203.0.113.7/32", "--no-bootstrap"))   # on the ready instance: the system ssh
    path, pid = the_master(awsrun_home)
    ok(cli("jobs"))
    assert the_master(awsrun_home) == (path, pid)
    ok(cli("stop"))
    wait_for(lambda: not alive(pid), timeout=10, what="the master to exit")
    assert sockets(awsrun_home) == []
    ok(cli("down", "--yes"))


def test_ssh_config_entries_share_the_master_with_plain_ssh(cli, ssh_cluster, awsrun_home):
    ok(cli("ssh", "--", "true"))
    ok(cli("jobs"))
    ok(cli("ssh-config"))
    config = (awsrun_home / "ssh_config").read_text()
    path, pid = the_master(awsrun_home)
    if not Control(path.parent, path.name, 0).fits:  # too long for ssh to take absolutely: no sharing
        assert "ControlPath" not in config
        return
    assert f"    ControlMaster auto\n    ControlPath {path}\n    ControlPersist 600\n" in config
    plain = subprocess.run(["ssh", "-F", str(awsrun_home / "ssh_config"), "default", "echo plain"],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and plain.stdout == "plain\n", plain
    assert the_master(awsrun_home) == (path, pid)  # plain ssh went through awsrun's master
