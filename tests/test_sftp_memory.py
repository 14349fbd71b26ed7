"""Without rsync, a 300 MB result goes and comes back in bounded memory: the push and the pull of one
300 MB file run in a fresh process (as a command runs them) over both SSH layers to a loopback host, and
the peak RSS of that process (its VmHWM), of what it runs here (the system ssh) and of the host's sshd processes that
serve the SFTP session (polled while it runs) all stay under 100 MB."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sftp_targets import Target, open_target

LIMIT_KB = 100 * 1024
SIZE = 300 * 1000 * 1000

CHILD = r"""
import json, os, resource, sys, threading, time
from pathlib import Path
from awsrun.job import jobs
from awsrun.transfer import sftp_pull, sftp_push, scan
from awsrun.home import Home
from awsrun.settings import load_settings

project, remote_root, back, listener = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
peak, done = [0], threading.Event()

def served_by_host():
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    below = {listener}
    for _ in range(6):
        below |= {pid for pid, parent in parents.items() if parent in below}
    return below - {listener}

def poll():
    while not done.wait(0.02):
        for pid in served_by_host():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass

def own_peak_kb():
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a fresh process would report the
    # peak of the process that forked it (pytest, after a test that held 256 MB)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

threading.Thread(target=poll, daemon=True).start()
host = jobs.open_host(Home(Path(os.environ["AWSRUN_HOME"])), load_settings(project))
started = time.monotonic()
pushed = sftp_push.push(host.remote, scan.scan(project), remote_root)
push_s = time.monotonic() - started
started = time.monotonic()
pulled = sftp_pull.pull(host.remote, remote_root, back)
pull_s = time.monotonic() - started
time.sleep(0.1)
done.set()
host.close()
print(json.dumps({"remote": type(host.remote).__name__, "sent": pushed.bytes_raw, "received": pulled.bytes_raw,
                  "push_s": push_s, "pull_s": pull_s, "self_kb": own_peak_kb(),
                  "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "host_kb": peak[0]}))
"""


@pytest.mark.parametrize("kind", ["openssh", "paramiko"])
def test_a_300_mb_push_and_pull_stay_under_100_mb_on_both_sides(kind, request, tmp_path, monkeypatch, awsrun_home):
    target: Target = open_target(kind, request, tmp_path, monkeypatch)
    project = tmp_path / "p"
    project.mkdir()
    with open(project / "weights.bin", "wb") as handle:  # random: no layer can shrink it
        for _ in range(SIZE // 10_000_000):
            handle.write(os.urandom(10_000_000))
    env = {**os.environ, "AWSRUN_HOME": str(awsrun_home), "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", CHILD, str(project), target.root, str(tmp_path / "back"),
                          str(target.host.process.pid)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    print(f"\n{kind}: {report}")
    assert report["remote"] == {"openssh": "OpenSshRemote", "paramiko": "SshRemote"}[kind]
    assert report["sent"] == report["received"] == SIZE
    assert (tmp_path / "back" / "weights.bin").stat().st_size == SIZE
    assert (target.path / "weights.bin").stat().st_size == SIZE
    assert 0 < report["host_kb"] < LIMIT_KB, report  # 0 would mean the host's sshd was never seen
    assert report["self_kb"] < LIMIT_KB and report["children_kb"] < LIMIT_KB, report
    with open(tmp_path / "back" / "weights.bin", "rb") as pulled, open(project / "weights.bin", "rb") as sent:
        while True:
            a, b = pulled.read(1 << 22), sent.read(1 << 22)
            assert a == b
            if not a:
                break
