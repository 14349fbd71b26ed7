"""Jobs end to end through the real CLI (a subprocess), on a loopback SSH host and on the local provider:
submit -> tmux on the machine -> logs / jobs / attach / pull / kill."""
from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pexpect
import pytest

from tests.harness.clusters import (  # noqa: F401 (fixtures)
    job_cluster,
    ssh_cluster,
    wait_for,
)

# Waits for a `go` file in its working directory (the synced project), so the test decides when it
# ends; copies blob.bin of the project into its output directory.
TRAIN = """\
import os, shutil, sys, time
print("epochs", sys.argv[1:], flush=True)
while not os.path.exists("go"):
    time.sleep(0.05)
out = os.environ["AWSRUN_OUTPUT_DIR"]
shutil.copyfile("blob.bin", os.path.join(out, "result.bin"))
print("wrote", os.path.join(out, "result.bin"), flush=True)
print("done", flush=True)
"""

TICKER = """\
import itertools, os, time
for i in itertools.count():
    print("tick", i, flush=True)
    if os.path.exists("stop"):
        break
    time.sleep(0.2)
print("stopped", flush=True)
"""


# --- the pure pieces ---------------------------------------------------------------------------------

def test_script_resolution_cwd_then_project_root_then_jobs(tmp_path):
    from awsrun.errors import ConfigError, NotFoundError
    from awsrun.job.jobs import resolve_script

    root = tmp_path / "proj"
    (root / "jobs" / "sub").mkdir(parents=True)
    for rel in ("train.py", "jobs/train.py", "jobs/only.py", "jobs/sub/x.py"):
        (root / rel).write_text("")
    (tmp_path / "elsewhere.py").write_text("")
    assert resolve_script("train.py", root, root) == "train.py"            # the cwd first
    assert resolve_script("train.py", root / "jobs", root) == "jobs/train.py"
    assert resolve_script("only.py", root, root) == "jobs/only.py"          # then jobs/ of the root
    assert resolve_script("sub/x.py", root / "jobs", root) == "jobs/sub/x.py"
    assert resolve_script("jobs/only.py", root / "jobs" / "sub", root) == "jobs/only.py"  # the root
    assert resolve_script(str(root / "jobs" / "only.py"), tmp_path, root) == "jobs/only.py"
    with pytest.raises(ConfigError, match="outside the project"):
        resolve_script("../elsewhere.py", root, root)
    (tmp_path / "only.py").write_text("")  # in the cwd but outside: the project's jobs/only.py wins
    assert resolve_script("only.py", tmp_path, root) == "jobs/only.py"
    with pytest.raises(NotFoundError, match="no script 'nope.py'"):
        resolve_script("nope.py", root, root)


def test_the_home_directory_is_never_synced_as_a_project(tmp_path, monkeypatch):
    from awsrun.errors import ConfigError
    from awsrun.job.jobs import check_project_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="home directory"):
        check_project_dir(tmp_path)
    with pytest.raises(ConfigError, match="filesystem root"):
        check_project_dir(Path("/"))
    (tmp_path / "p").mkdir()
    assert check_project_dir(tmp_path / "p") == tmp_path / "p"


def test_job_argv_and_display():
    from awsrun.job.jobs import display_command, job_argv

    assert job_argv("jobs/t.py", ("--a", "b c"), "python3") == (["python3", "jobs/t.py", "--a", "b c"], True)
    assert job_argv("run.sh", (), "python3") == (["bash", "run.sh"], False)
    assert job_argv("-odd.py", (), "python3") == (["python3", "./-odd.py"], True)
    assert display_command(["env", "PYTHONUNBUFFERED=1", "A=b=c", "/home/u/venvs/awsrun/bin/python", "t.py", "X=1"]) == [
        "python", "t.py", "X=1"]
    assert display_command([]) == []


@pytest.mark.parametrize("raw, label, duration", [
    ({"alive": True, "started_at": 100.0}, "running", 50.0),
    ({"alive": True, "started_at": 100.0, "exit_code": 0, "ended_at": 130.0}, "exited 0", 30.0),
    ({"alive": False, "started_at": 100.0, "exit_code": 3, "ended_at": 101.0}, "exited 3", 1.0),
    ({"alive": False, "started_at": 100.0, "killed_at": 120.0, "exit_code": 130, "ended_at": 121.0}, "killed", 21.0),
    ({"alive": True, "started_at": 100.0, "killed_at": 120.0}, "killed", 20.0),
    ({"alive": False, "started_at": 100.0}, "killed", None),   # gone without an exit code
    ({"alive": True}, "running", None),                       # a session awsrun did not start
])
def test_job_states(raw, label, duration):
    from awsrun.job.jobs import job_status

    status = job_status({"name": "w", "argv": [], **raw}, now=150.0)
    assert (status.label, status.duration) == (label, duration)


def test_exit_status_of_a_followed_job():
    from awsrun.job.jobs import KILLED_EXIT, JobEnd

    assert [JobEnd(0, False, False).status, JobEnd(3, False, False).status, JobEnd(130, True, False).status,
            JobEnd(None, False, False).status, JobEnd(None, False, True).status, JobEnd(300, False, False).status] == [
        0, 3, KILLED_EXIT, KILLED_EXIT, 0, 1]


def test_ports_and_the_ssh_argv_for_tunnels_and_commands():
    from types import SimpleNamespace

    from awsrun.errors import ConfigError
    from awsrun.job.interactive import parse_ports, ssh_argv, tunnel_argv

    assert parse_ports(["6006", "16006:6006"]) == [(6006, 6006), (16006, 6006)]
    for bad in (["0"], ["70000"], ["a"], ["1:b"], []):
        with pytest.raises(ConfigError):
            parse_ports(bad)

    class Remote:
        def interactive_argv(self, command=None):
            return ["ssh", "-t", "-q", "-i", "k", "-p", "22", "u@h"] + ([command] if command is not None else [])

    host = SimpleNamespace(remote=Remote(), local=False)
    assert tunnel_argv(host, [(16006, 6006)]) == [
        "ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ControlPath=none", "-L", "127.0.0.1:16006:127.0.0.1:6006", "-i", "k", "-p", "22", "u@h"]
    assert tunnel_argv(SimpleNamespace(remote=Remote(), local=True), [(1, 1)]) is None
    assert ssh_argv(host, ["nvidia-smi | head"], tty=True)[-1] == "nvidia-smi | head"
    assert ssh_argv(host, ["ls", "a b", "-t"], tty=False) == ["ssh", "-q", "-i", "k", "-p", "22", "u@h", "ls 'a b' -t"]
    assert ssh_argv(host, [], tty=True) == Remote().interactive_argv()


def test_ssh_config_render_exact():
    from awsrun.cluster.sshconfig import HostEntry, render
    from awsrun.errors import ConfigError

    entry = HostEntry("gpu", "1.2.3.4", 22, "ubuntu", "/home/me/my keys/k%1", "/home/me/.awsrun/known_hosts",
                      "i-0abc", "aws ssm start-session --target %h --parameters portNumber=%p")
    assert render([entry, HostEntry("gpu-1", "10.0.0.2", 2222, "ec2-user", "/k", "/kh", "10.0.0.2:2222")]) == (
        "# Written by `awsrun ssh-config` from awsrun's state; rewritten each time: do not edit.\n"
        "\n"
        "Host gpu\n"
        "    HostName 1.2.3.4\n"
        "    Port 22\n"
        "    User ubuntu\n"
        '    IdentityFile "/home/me/my keys/k%%1"\n'
        "    IdentitiesOnly yes\n"
        "    UserKnownHostsFile /home/me/.awsrun/known_hosts\n"
        "    HostKeyAlias i-0abc\n"
        "    StrictHostKeyChecking yes\n"
        "    ProxyCommand aws ssm start-session --target %h --parameters portNumber=%p\n"
        "\n"
        "Host gpu-1\n"
        "    HostName 10.0.0.2\n"
        "    Port 2222\n"
        "    User ec2-user\n"
        "    IdentityFile /k\n"
        "    IdentitiesOnly yes\n"
        "    UserKnownHostsFile /kh\n"
        "    HostKeyAlias 10.0.0.2:2222\n"
        "    StrictHostKeyChecking yes\n"
    )
    with pytest.raises(ConfigError):
        render([HostEntry("x", "h", 22, 'u"', "/k", "/kh", "a")])


# --- through the CLI ----------------------------------------------------------------------------------

def blob() -> bytes:
    return b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(4000))  # 128 KB


def make_project(project: Path, **scripts: str) -> Path:
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "jobs").mkdir(exist_ok=True)
    (project / "blob.bin").write_bytes(blob())
    for name, text in scripts.items():
        (project / "jobs" / f"{name}.py").write_text(text)
    return project


def jobs_table(cli) -> dict[str, list[str]]:
    result = cli("jobs")
    assert result.exit_code == 0, result
    rows = [line.split("\t") for line in result.stdout.splitlines() if line and not line.startswith("#")]
    assert rows[0] == ["session", "state", "started", "duration", "command", "project"], result
    return {row[0]: row for row in rows[1:]}


def state_of(cli, session: str) -> str | None:
    row = jobs_table(cli).get(session)
    return row[1] if row else None


def test_submit_runs_in_tmux_outlives_connections_and_logs_jobs_pull_report_it(cli, project, job_cluster):
    make_project(project, train=TRAIN)
    submitted = cli("submit", "train.py", "--epochs", "2")  # found in jobs/, from the project root
    assert submitted.exit_code == 0, submitted
    assert "started job 'work'" in submitted.stderr
    assert job_cluster.sessions() == ["work"]
    assert state_of(cli, "work") == "running"
    job_cluster.drop_connections()  # no SSH connection is left (the CLI's own are gone already)

    (job_cluster.project(project) / "go").write_text("")
    wait_for(lambda: state_of(cli, "work") == "exited 0", what="the job to exit 0")
    row = jobs_table(cli)["work"]
    assert row[3].endswith("s") and row[4] == f"{Path(sys.executable).name if job_cluster.provider == 'local' else 'python3'} jobs/train.py --epochs 2"

    logs = cli("logs", "work")
    assert logs.exit_code == 0, logs
    assert logs.stdout.splitlines() == ["epochs ['--epochs', '2']", "wrote runs/work/result.bin", "done"]
    assert cli("logs", "work", "-n", "1").stdout == "done\n"

    pulled = cli("pull")
    assert pulled.exit_code == 0, pulled
    assert (project / "runs" / "work" / "result.bin").read_bytes() == blob()
    assert "pulled 1 file" in pulled.stderr
    again = cli("pull", "work")
    assert "pulled 0 files" in again.stderr and "1 unchanged" in again.stderr


def test_script_is_found_from_inside_jobs_and_runs_in_the_synced_project(cli, project, job_cluster):
    make_project(project, where="import os; print(os.getcwd()); print(os.environ['AWSRUN_OUTPUT_DIR'])")
    result = cli("submit", "--follow", "where.py", cwd=project / "jobs")
    assert result.exit_code == 0, result
    synced = job_cluster.project(project)
    expected = f"/home/ubuntu/awsrun/{synced.name}" if job_cluster.provider == "ssh" else str(synced)
    assert result.stdout.splitlines() == [expected, "runs/work"]
    assert (synced / "runs" / "work").is_dir()


def submit_json(cli, *args: str, **kwargs) -> dict:
    result = cli("submit", "--json", *args, **kwargs)
    assert result.exit_code == 0, result
    return json.loads(result.stdout)


def test_resubmit_sends_only_the_changed_file_and_deletes_the_removed_one(cli, project, ssh_cluster):
    make_project(project, quick="print('ok')")
    for d in range(20):
        (project / "src" / f"pkg{d}").mkdir(parents=True)
        for f in range(100):
            (project / "src" / f"pkg{d}" / f"mod{f}.py").write_text(f"# module {d}.{f}\nVALUE = {d * 100 + f}\n" * 20)
    total = sum(1 for p in project.rglob("*") if p.is_file())
    assert total >= 2000

    first = submit_json(cli, "--name", "s1", "quick.py")["sync"]
    assert (first["files_sent"], first["deleted"], first["unchanged"]) == (total, 0, 0)
    synced = ssh_cluster.project(project)
    assert (synced / "src" / "pkg7" / "mod42.py").read_text() == (project / "src" / "pkg7" / "mod42.py").read_text()

    unchanged = submit_json(cli, "--name", "s2", "quick.py")["sync"]
    assert (unchanged["files_sent"], unchanged["bytes_raw"], unchanged["unchanged"]) == (0, 0, total)

    changed = project / "src" / "pkg3" / "mod5.py"
    changed.write_text(changed.read_text() + "EXTRA = 1\n")
    (project / "src" / "pkg9" / "mod9.py").unlink()
    third = submit_json(cli, "--name", "s3", "quick.py")["sync"]
    assert (third["files_sent"], third["deleted"], third["unchanged"]) == (1, 1, total - 2)
    assert third["bytes_raw"] == changed.stat().st_size
    # rsync's file list (some 17 bytes a file) and the one file's changed blocks, not the project's 2.6 MB
    assert third["bytes_sent"] < 60_000
    assert (synced / "src" / "pkg3" / "mod5.py").read_text().endswith("EXTRA = 1\n")
    assert not (synced / "src" / "pkg9" / "mod9.py").exists()
    assert (synced / "src" / "pkg9" / "mod8.py").exists()


HOSTILE = ["a b", "; touch pwned1", "$(touch pwned2)", "`touch pwned3`", "'", '"', "\\", "--name", "-x", "ü 漢",
           "line\nbreak", "", "*", "~"]


def test_args_and_env_reach_the_job_verbatim(cli, project, job_cluster):
    make_project(project, echo=(
        "import json, os, sys\n"
        "out = os.path.join(os.environ['AWSRUN_OUTPUT_DIR'], 'args.json')\n"
        "json.dump({'argv': sys.argv[1:], 'env': os.environ.get('HOSTILE')}, open(out, 'w'))\n"))
    value = "x; $(touch pwned4) 'q' \"d\" `id`"
    result = cli("submit", "--follow", "--env", f"HOSTILE={value}", "--name", "hostile", "echo.py", *HOSTILE)
    assert result.exit_code == 0, result
    received = json.loads((project / "runs" / "hostile" / "args.json").read_text())  # pulled by --follow
    assert received == {"argv": HOSTILE, "env": value}
    synced = job_cluster.project(project)
    assert not [p for p in synced.parent.parent.rglob("pwned*")]


def test_failing_job_is_reported_exited_3_and_follow_exits_3(cli, project, job_cluster):
    make_project(project, fail="import sys; print('about to fail', flush=True); sys.exit(3)")
    result = cli("submit", "--follow", "--name", "bad", "fail.py")
    assert result.exit_code == 3, result
    assert result.stdout == "about to fail\n"
    assert "job 'bad' exited 3" in result.stderr
    assert state_of(cli, "bad") == "exited 3"
    follow_again = cli("logs", "-f", "bad")
    assert (follow_again.exit_code, follow_again.stdout) == (3, "about to fail\n")


def test_a_running_name_is_refused_a_killed_one_reported_and_a_finished_one_replaced(cli, project, ssh_cluster):
    make_project(project, ticker=TICKER)
    assert cli("submit", "ticker.py").exit_code == 0
    refused = cli("submit", "ticker.py")
    assert refused.exit_code == 1, refused
    assert "job 'work' is still running" in refused.stderr
    assert "--name NAME" in refused.stderr and "awsrun kill work" in refused.stderr

    killed = cli("kill", "work")
    assert killed.exit_code == 0, killed
    assert ssh_cluster.sessions() == []
    assert state_of(cli, "work") == "killed"
    assert (ssh_cluster.job("work") / "exit_code").exists()  # Ctrl-C first: the wrapper saw it end
    assert cli("kill", "work").exit_code == 7

    replaced = cli("submit", "ticker.py")
    assert replaced.exit_code == 0, replaced
    assert state_of(cli, "work") == "running"
    assert cli("kill", "--force", "work").exit_code == 0
    assert state_of(cli, "work") == "killed"


def test_names_tmux_cannot_take_are_refused_with_the_reason(cli, project):
    make_project(project, quick="print('ok')")
    for bad in ("a.b", "a:b", "-x", "", "a b", "x" * 65):
        result = cli("submit", "--name", bad, "quick.py")
        assert result.exit_code == 2, result
        assert result.stderr.startswith("error: session name") and "Traceback" not in result.stderr


def test_attach_shows_live_output_detaches_and_the_job_goes_on(cli, project, job_cluster):
    make_project(project, ticker=TICKER)
    assert cli("submit", "ticker.py").exit_code == 0
    env = cli.environment({"TERM": "xterm-256color"})
    child = pexpect.spawn(cli.argv("attach")[0], cli.argv("attach")[1:], cwd=str(project), env=env,
                          timeout=30, dimensions=(40, 120))
    try:
        child.expect(r"tick (\d+)")
        first = int(child.match.group(1))
        child.expect(r"tick (\d+)")
        assert int(child.match.group(1)) >= first  # live: the screen keeps changing
        child.send("\x02")  # ctrl-b
        child.send("d")
        child.expect(r"detached")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert state_of(cli, "work") == "running"
    (job_cluster.project(project) / "stop").write_text("")
    wait_for(lambda: state_of(cli, "work") == "exited 0", what="the job to end after the detach")
    assert cli("logs", "-n", "1").stdout == "stopped\n"


def test_ssh_runs_commands_verbatim(cli, project, ssh_cluster):
    result = cli("ssh", "--", "printf", "[%s]\\n", "a b", "$(id)", "'")
    assert (result.exit_code, result.stdout) == (0, "[a b]\n[$(id)]\n[']\n"), result
    line = cli("ssh", "--", "echo $HOME; whoami")
    assert line.stdout.split() == ["/home/ubuntu", "ubuntu"], line


class _EchoServer:
    """Answers b"echo:" + what it got on 127.0.0.1, until stop() (which joins its thread: the port is
    really free afterwards, not held by an accept() still blocking)."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.socket.settimeout(0.1)
        self.port = self.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except socket.timeout:
                continue
            with connection:
                connection.settimeout(5)
                connection.sendall(b"echo:" + connection.recv(100))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()


def test_tunnel_forwards_a_local_port_to_the_instance_until_interrupted(cli, project, ssh_cluster):
    server = _EchoServer()  # the loopback host shares this network: its 127.0.0.1 is ours
    remote_port = server.port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]
    tunnel = cli.popen("tunnel", f"{local_port}:{remote_port}", stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def answer():
        try:
            with socket.create_connection(("127.0.0.1", local_port), timeout=2) as connection:
                connection.sendall(b"hi")
                return connection.recv(100)
        except OSError:
            return None

    try:
        assert wait_for(answer, timeout=30, what="the tunnel to answer") == b"echo:hi"
    finally:
        tunnel.send_signal(signal.SIGINT)
        _, err = tunnel.communicate(timeout=30)
        server.stop()
    assert tunnel.returncode == 0, err
    assert f"forwarding http://127.0.0.1:{local_port}" in err.decode()
    assert answer() is None


def test_ssh_config_entries_work_with_plain_ssh_and_install_asks_first(cli, project, ssh_cluster, tmp_path):
    user_home = tmp_path / "user-home"
    (user_home / ".ssh").mkdir(parents=True)
    (user_home / ".ssh" / "config").write_text("Host other\n    User me\n")
    env = {"HOME": str(user_home)}
    assert cli("jobs").exit_code == 0  # first contact pins the host key in AWSRUN_HOME/known_hosts

    written = cli("ssh-config", env=env)
    assert written.exit_code == 0, written
    assert (user_home / ".ssh" / "config").read_text() == "Host other\n    User me\n"  # untouched
    config = (cli.home / "ssh_config").read_text()
    host = ssh_cluster.host
    assert f"Host default\n    HostName {host.address}\n    Port {host.port}\n    User ubuntu\n" in config
    assert f"    HostKeyAlias {host.address}:{host.port}\n    StrictHostKeyChecking yes\n" in config
    assert oct((cli.home / "ssh_config").stat().st_mode & 0o777) == "0o600"

    installed = cli("ssh-config", "--install", env=env)
    assert installed.exit_code == 0, installed
    again = cli("ssh-config", "--install", env=env)
    assert "already there" in again.stderr
    text = (user_home / ".ssh" / "config").read_text()
    assert text.count("Include") == 1 and text.index("Include") < text.index("Host other")
    assert text.endswith("Host other\n    User me\n")

    plain = subprocess.run(["ssh", "-F", str(user_home / ".ssh" / "config"), "-o", "BatchMode=yes", "default",
                            "echo", "reached", "$HOSTNAME", "via", "$USER"],
                           capture_output=True, text=True, timeout=60, env=cli.environment(env))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split()[0] == "reached" and plain.stdout.split()[-1] == "ubuntu"


def test_ctrl_c_stops_following_never_the_job(cli, project, job_cluster):
    make_project(project, ticker=TICKER)
    follower = cli.popen("submit", "--follow", "ticker.py", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout.readline().startswith(b"tick ")
        follower.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does to awsrun
        _, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 130, err
    assert b"stopped following; job 'work' goes on" in err and b"awsrun logs work -f" in err
    assert b"error" not in err  # the user asked to stop following: no fault
    assert state_of(cli, "work") == "running"
    (job_cluster.project(project) / "stop").write_text("")
    wait_for(lambda: state_of(cli, "work") == "exited 0", what="the job to end on its own")


def test_pull_on_exit_and_pull_of_another_path_to_another_place(cli, project, job_cluster, tmp_path):
    make_project(project, write=(
        "import os\n"
        "open(os.path.join(os.environ['AWSRUN_OUTPUT_DIR'], 'metrics.jsonl'), 'w').write('{}\\n')\n"
        "os.makedirs('extra/deep', exist_ok=True)\n"
        "open('extra/deep/note.txt', 'w').write('note')\n"))
    result = cli("submit", "--pull-on-exit", "--name", "w2", "write.py")
    assert result.exit_code == 0, result
    assert result.stdout == ""  # waiting, not following
    assert (project / "runs" / "w2" / "metrics.jsonl").read_text() == "{}\n"
    elsewhere = tmp_path / "elsewhere"
    other = cli("pull", "--remote", "extra", "--to", str(elsewhere))
    assert other.exit_code == 0, other
    assert (elsewhere / "deep" / "note.txt").read_text() == "note"
    mirrored = cli("pull", "--remote", "extra/deep")
    assert mirrored.exit_code == 0 and (project / "extra" / "deep" / "note.txt").read_text() == "note"
    refused = cli("pull", "--remote", "../outside")
    assert refused.exit_code == 2 and "plain path inside the project" in refused.stderr
    missing = cli("pull", "nothing-here")
    assert missing.exit_code == 7 and "does not exist" in missing.stderr


def test_attach_without_a_name_lists_the_running_jobs_when_there_are_several(cli, project, ssh_cluster):
    make_project(project, ticker=TICKER)
    none = cli("attach")
    assert none.exit_code == 7 and "no job is running" in none.stderr
    assert cli("submit", "--name", "one", "ticker.py").exit_code == 0
    assert cli("submit", "--name", "two", "ticker.py").exit_code == 0
    several = cli("attach")
    assert several.exit_code == 2, several
    assert "2 jobs are running: one, two" in several.stderr and "awsrun attach SESSION" in several.stderr
    finished = cli("attach", "nope")
    assert finished.exit_code == 7 and "no job named 'nope'" in finished.stderr
