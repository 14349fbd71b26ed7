"""`awsrun tensorboard` and `awsrun notebook`: the servers listen on the instance's 127.0.0.1 only and are
reached through an SSH tunnel. End to end on the loopback torch host (tests/harness/torch_host.py): the
CLI installs the package into the venv from the wheelhouse (AWSRUN_PIP_ARGS), a real train_stn run
writes event files, and its scalars come back over HTTP through the tunnel; Jupyter's /api/status
answers with the token. The loopback hosts share this machine's network namespace, so the server's
port on the "instance" is taken here too: each SSH test also shows the next-free-local-port path."""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.harness.clusters import local_cluster_in, ssh_cluster_on, wait_for
from tests.harness.torch_host import PIP_ARGS, WHEELHOUSE

REPO = Path(__file__).resolve().parents[1]
STEPS, LOG_EVERY = 20, 5
TRAIN = ("train_stn.py", "--dataset", "digits", "--model", "fcn", "--steps", str(STEPS), "--batch-size", "32",
         "--log-every", str(LOG_EVERY), "--eval-every", str(STEPS), "--ckpt-every", str(STEPS))
# The torch venv holds torch (and what these tests install); the job also needs numpy, matplotlib and
# scikit-learn (--dataset digits): this interpreter's (cp311, like the host's) are linked into a directory
# the host user reads, given to the job as PYTHONPATH.


# --- the pure pieces ---------------------------------------------------------------------------------

def test_server_argv_url_and_install_command():
    from awsrun.errors import ConfigError
    from awsrun.job import watch

    board = watch.tensorboard_spec(6006, "runs/a b")
    assert board.argv("/v/bin/python", 6007) == [
        "/v/bin/python", "-m", "tensorboard.main", "--logdir", "runs/a b", "--host", "127.0.0.1", "--port", "6007"]
    assert board.url(16006) == "http://127.0.0.1:16006/"
    notebook = watch.notebook_spec(8888, token="t0k")
    assert notebook.argv("py", 8888) == ["py", "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=8888",
                                         "--port-retries=0"]
    assert notebook.env() == {"JUPYTER_TOKEN": "t0k"} and board.env() == {}  # never a word of a command line
    assert notebook.url(8890, "t0k") == "http://127.0.0.1:8890/lab?token=t0k"
    assert len(watch.notebook_spec().token) == 48 and watch.notebook_spec().token != watch.notebook_spec().token
    assert watch.running_port_and_token(board.argv("p", 6010)) == (6010, "")
    assert watch.running_port_and_token(notebook.argv("p", 8889)) == (8889, "")
    assert watch.running_port_and_token(["p", "--port=8889", "--IdentityProvider.token=old"]) == (8889, "old")
    assert watch.running_port_and_token(["python", "train.py", "--port", "x"]) == (None, "")
    assert watch.install_command("/v/py", "tensorboard", "--no-index --find-links '/w h'") == [
        "/v/py", "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--progress-bar", "off",
        "--no-index", "--find-links", "/w h", "tensorboard"]
    for bad in (0, 65535, -1):
        with pytest.raises(ConfigError):
            watch.tensorboard_spec(bad)
    with pytest.raises(ConfigError):
        watch.tensorboard_spec(6006, "a\nb")


def test_probe_answer_parsing():
    from awsrun.errors import RemoteError
    from awsrun.job import watch

    probe = watch.parse_probe("python=/h/v/bin/python\nvenv=1\ninstalled=0\nrunning=1\nargv=/h/v/bin/python\n"
                              "argv=-m\nargv=a=b\nfree=6007\n")
    assert probe == watch.Probe("/h/v/bin/python", True, False, True, ("/h/v/bin/python", "-m", "a=b"), 6007)
    assert watch.parse_probe("python=p\nvenv=0\ninstalled=1\nrunning=1\ntoken=t0k\nfree=1\n").token == "t0k"
    with pytest.raises(RemoteError):
        watch.parse_probe("bash: python3: command not found\n")


def test_probe_and_wait_commands_on_a_real_shell(tmp_path):
    """The probe finds the next free port and a running server's argv; the wait command gives up with
    the log's tail when the session is gone (tmux on a private socket dir)."""
    from awsrun.job import watch
    from awsrun.remote.local import LocalRemote

    jobs_root = tmp_path / "jobs"
    spec = watch.tensorboard_spec(_free_port_pair())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", spec.port))
        taken.listen()
        answer = LocalRemote().run(watch.probe_command(spec, "python3", str(tmp_path / "no-venv/bin/python"),
                                                       str(jobs_root))).check()
    probe = watch.parse_probe(answer.stdout)
    assert (probe.python, probe.venv, probe.installed, probe.running, probe.free_port) == (
        "python3", False, shutil.which("tensorboard") is not None, False, spec.port + 1)
    job = jobs_root / "tensorboard"
    job.mkdir(parents=True)
    (job / "log").write_text("line 1\nTraceback: boom\n")
    gone = LocalRemote().run(watch.wait_command("tensorboard", spec.port, str(jobs_root)))
    assert (gone.exit_code, gone.stdout) == (watch.EXIT_GONE, "line 1\nTraceback: boom\n")


def test_free_local_port_skips_taken_ones():
    from awsrun.job.watch import free_local_port

    first = _free_port_pair()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        assert free_local_port(first) == first + 1
    assert free_local_port(first) == first


def test_the_autostop_agent_does_not_count_a_server_as_work(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("awsrun_agent", REPO / "infra" / "awsrun-agent.py")
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    server, work = tmp_path / "tensorboard", tmp_path / "work"
    for job in (server, work):
        job.mkdir()
    (server / "service").write_text("")
    monkeypatch.setattr(agent, "save_state", lambda state: None)
    config = {"idle_seconds": 60, "shutdown_command": ["true"]}
    monkeypatch.setattr(agent, "running_jobs", lambda: [server])
    state: dict = {}
    agent.check_idle(config, state, now=1000.0)
    assert state == {"idle_since": 1000.0}           # only a server runs: idle
    monkeypatch.setattr(agent, "running_jobs", lambda: [server, work])
    agent.check_idle(config, state, now=1010.0)
    assert state == {}                               # a real job runs: busy


# --- helpers for the end-to-end tests -----------------------------------------------------------------

def _free_port_pair() -> int:
    """A port P with P and P+1..P+3 free on 127.0.0.1 now (servers and tunnels take the next ones)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + 4 < 65535 - 50 and all(_free(port) for port in range(first, first + 4)):
            return first
    raise AssertionError("no four free ports in a row")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _get(url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Blocking:
    """A CLI command that holds its tunnel open: stdout lines in a queue, stderr kept."""

    def __init__(self, cli, *args: str):
        self.process = cli.popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    def url(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    time.sleep(0.2)  # let the stderr thread finish
                    raise AssertionError(f"exited {self.process.returncode} before printing a URL: {self.stderr}")
                continue
            if line.startswith("http://"):
                return line
        self.stop()
        raise AssertionError(f"no URL within {timeout:.0f}s: {self.stderr}")

    def interrupt(self, timeout: float = 15) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=timeout)
        time.sleep(0.1)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def require_wheels(*names: str) -> None:
    """Fail (never skip) when the wheelhouse lacks what the CLI will pip-install offline."""
    missing = [name for name in names if not list(WHEELHOUSE.glob(f"{name}-*.whl"))]
    if missing:
        pytest.fail(f"no {', '.join(missing)} wheel in {WHEELHOUSE}: `.ci/run` downloads them (python3 -m pip "
                    f"download --only-binary=:all: -d {WHEELHOUSE} tensorboard jupyterlab)", pytrace=False)


def _ssh_cluster(torch_host, fleet, awsrun_home, tmp_path, cli, project):
    require_wheels("tensorboard", "jupyterlab")
    cluster = ssh_cluster_on(torch_host.host, fleet.base, awsrun_home, tmp_path / "keys")
    cli.env.update({"AWSRUN_SSH_PROXY_COMMAND": fleet.proxy_command, "AWSRUN_PIP_ARGS": PIP_ARGS})
    (project / "pyproject.toml").write_text("[project]\nname = 'stn'\n")
    # without requirements.txt: submit would pip-install it (matplotlib...) from the wheelhouse, which lacks it
    shutil.copytree(REPO / "jobs", project / "jobs",
                    ignore=shutil.ignore_patterns("__pycache__", "runs", "data", "requirements.txt"))
    return cluster


def _process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def listening_addresses(job_dir: Path) -> set[str]:
    """What the server (the job's process and its children) listens on, as `ss -ltnp` shows it."""
    pids = _process_tree(int((job_dir / "pid").read_text()))
    found = set()
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.add(line.split()[3])
    return found


def assert_loopback_only(job_dir: Path, port: int) -> None:
    addresses = wait_for(lambda: listening_addresses(job_dir), timeout=10, what="the server's listening sockets")
    assert f"127.0.0.1:{port}" in addresses, addresses
    assert all(address.startswith("127.0.0.1:") for address in addresses), addresses


# --- end to end -----------------------------------------------------------------------------------------

def test_tensorboard_serves_a_runs_scalars_through_the_tunnel(torch_host, fleet, awsrun_home, project, tmp_path,
                                                              cli, job_pythonpath):
    cluster = _ssh_cluster(torch_host, fleet, awsrun_home, tmp_path, cli, project)
    port = _free_port_pair()
    board = Blocking(cli, "tensorboard", "--port", str(port))
    try:
        url = board.url()
        local_port = urllib.parse.urlsplit(url).port
        # the instance is this machine's network namespace: the server's port is taken here, so the next
        assert re.search(rf"port {port} is taken here: using {local_port} instead", board.stderr), board.stderr
        assert local_port != port and url == f"http://127.0.0.1:{local_port}/"
        job = cluster.job("tensorboard")
        assert "--host 127.0.0.1" in " ".join((job / "argv").read_text().split("\0"))
        assert (job / "service").exists()  # the autostop agent does not count it as work
        assert_loopback_only(job, port)

        trained = cli("submit", "--env", f"PYTHONPATH={job_pythonpath}", "-f", *TRAIN, timeout=180)
        assert trained.exit_code == 0, trained
        assert "skipping event files" not in trained.stdout
        assert list((cluster.project(project) / "runs" / "work").glob("events.out.tfevents.*")), trained

        def loss_points():
            status, body = _get(url + "data/plugin/scalars/tags")
            tags = json.loads(body) if status == 200 else {}
            if "train/loss" not in tags.get("work", {}):
                return None
            query = urllib.parse.urlencode({"run": "work", "tag": "train/loss"})
            status, body = _get(f"{url}data/plugin/scalars/scalars?{query}")
            points = json.loads(body) if status == 200 else []
            return points if len(points) == STEPS // LOG_EVERY else None

        points = wait_for(loss_points, timeout=60, interval=0.5, what="the run's train/loss through the tunnel")
        assert [step for _, step, _ in points] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
        assert all(value > 0 for _, _, value in points)
        status, page = _get(url)
        assert status == 200 and b"tensorboard" in page.lower()

        assert board.interrupt() == 0, board.stderr
        assert "tunnel closed; tensorboard keeps running" in board.stderr
        assert not _answers(local_port)                       # the tunnel is gone
        assert "tensorboard" in cluster.sessions() and _answers(port)  # the server is not

        again = Blocking(cli, "tensorboard", "--port", str(port))   # reused, not started twice
        try:
            url = again.url(timeout=60)
            assert "already running" in again.stderr and "installing" not in again.stderr, again.stderr
            assert _get(url + "data/plugin/scalars/tags")[0] == 200
            assert again.interrupt() == 0
        finally:
            again.stop()
        killed = cli("kill", "tensorboard")
        assert killed.exit_code == 0, killed
        wait_for(lambda: not _answers(port), timeout=15, what="the server to stop")
    finally:
        board.stop()
        cluster.tmux("kill-server")


def test_notebook_serves_jupyter_with_its_token_through_the_tunnel(torch_host, fleet, awsrun_home, project,
                                                                   tmp_path, cli):
    cluster = _ssh_cluster(torch_host, fleet, awsrun_home, tmp_path, cli, project)
    (project / "notes.txt").write_text("synced\n")
    assert cli("submit", "--name", "sync", "jobs/stn/__init__.py").exit_code == 0  # syncs the project
    port = _free_port_pair()
    notebook = Blocking(cli, "notebook", "--port", str(port))
    try:
        url = notebook.url(timeout=150)
        parts = urllib.parse.urlsplit(url)
        token = urllib.parse.parse_qs(parts.query)["token"][0]
        assert parts.path == "/lab" and len(token) == 48 and parts.port != port, url
        base = f"http://127.0.0.1:{parts.port}"
        status, body = _get(f"{base}/api/status", {"Authorization": f"token {token}"})
        assert status == 200 and "started" in json.loads(body), body
        assert _get(f"{base}/api/status")[0] == 403                        # the token is needed
        status, body = _get(f"{base}/api/contents?token={token}")      # rooted at the synced project
        assert status == 200 and {"notes.txt", "jobs"} <= {item["name"] for item in json.loads(body)["content"]}
        assert_loopback_only(cluster.job("notebook"), port)

        assert notebook.interrupt() == 0, notebook.stderr
        assert "tunnel closed; notebook keeps running" in notebook.stderr
        assert not _answers(parts.port) and _answers(port) and "notebook" in cluster.sessions()
    finally:
        notebook.stop()
        cluster.tmux("kill-server")


def test_tensorboard_on_the_local_provider_needs_no_tunnel(torch_host, fleet, awsrun_home, tmp_path, cli):
    """The local provider's instance is this machine: the server on 127.0.0.1, no ssh, the command returns."""
    require_wheels("tensorboard")
    remote = torch_host.connect(tmp_path)
    try:   # run as the host's user, so the venv stays theirs (a no-op after the SSH test)
        remote.run([torch_host.python, "-m", "pip", "install", "-q", *PIP_ARGS.split(), "tensorboard"]).check()
    finally:
        remote.close()
    cluster = local_cluster_in(tmp_path, awsrun_home)
    cli.env.update({"AWSRUN_REMOTE_DIR": str(cluster.remote_dir), "AWSRUN_VENV": str(torch_host.local_venv),
                    **cluster.tmux_env})
    try:
        port = _free_port_pair()
        started = cli("tensorboard", "--port", str(port), timeout=120)
        assert started.exit_code == 0, started
        assert started.stdout == f"http://127.0.0.1:{port}/\n" and "runs on this machine" in started.stderr
        assert _get(f"http://127.0.0.1:{port}/data/plugin/scalars/tags")[0] == 200
        assert_loopback_only(cluster.job("tensorboard"), port)
        again = cli("tensorboard", "--port", str(port))
        assert again.exit_code == 0 and "already running" in again.stderr, again
        assert cli("kill", "tensorboard").exit_code == 0
    finally:
        cluster.tmux("kill-server")
        for step in cluster.cleanup:
            step()


def test_on_this_machine_awsrun_never_pip_installs_into_the_python_it_runs_with(tmp_path, awsrun_home):
    """The local provider without awsrun's venv runs servers with the user's own Python: a missing package
    is the user's to install there, not awsrun's (it used to pip-install tensorboard and five others)."""
    import subprocess
    import sys

    from awsrun.errors import ConfigError
    from awsrun.home import Home
    from awsrun.job import watch
    from awsrun.job.jobs import JobHost
    from awsrun.remote.local import LocalRemote
    from awsrun.state import ClusterRecord, InstanceRecord

    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    host = JobHost(Home(awsrun_home), ClusterRecord("default", "local"), InstanceRecord("local", "default", "running"),
                   LocalRemote(), True, sys.executable, str(tmp_path / "jobs"), python,
                   str(tmp_path / "no-venv" / "bin" / "python"), str(tmp_path / "projects"),
                   socket=f"awsrun-test-{tmp_path.name}")
    with pytest.raises(ConfigError) as raised:
        watch.serve(host, watch.tensorboard_spec(_free_port_pair()), str(tmp_path))
    assert raised.value.message == (f"tensorboard is not installed in {python}, the Python awsrun runs with on "
                                    "this machine, and awsrun does not install packages into it")
    assert raised.value.hint.startswith(f"`{python} -m pip install tensorboard` installs it there")
    assert not (tmp_path / "jobs" / "tensorboard").exists()  # nothing was started either
