"""One loopback sshd host of the test harness (tests/harness/sshd.py), an AWSRUN_HOME whose state has a
cluster `default` on it, and the plain OpenSSH options to reach it by hand. Needs root (sshd, unshare)
and a user `ubuntu`, as `bash .ci/run` sets up. Used by bench/submit_latency.py and bench/sync.py."""
from __future__ import annotations

import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from tests.harness.sshd import SshHost


@dataclass
class Loopback:
    base: Path
    host: SshHost
    key: Path
    awsrun_home: Path
    known_hosts: Path

    @property
    def target(self) -> str:
        return f"ubuntu@{self.host.address}"

    def ssh_options(self) -> list[str]:
        return ["-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

    def ssh(self, *command: str) -> list[str]:
        return ["ssh", *self.ssh_options(), "-p", str(self.host.port), self.target, *command]

    def ssh_command_string(self) -> str:
        """For rsync -e."""
        return " ".join(["ssh", *self.ssh_options(), "-p", str(self.host.port)])

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWSRUN_")}
        env.update({"AWSRUN_HOME": str(self.awsrun_home), "PYTHONPATH": str(REPO)})
        return env

    def awsrun(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "awsrun", *args]

    def scp_and_tmux(self, project: Path, prefix: str, session: str):
        """The classic recipe as an action of run i: `scp -r` the project to ~/PREFIX-i, then `ssh tmux new`."""
        def action(i: int) -> None:
            run(["scp", "-q", "-r", *self.ssh_options(), "-P", str(self.host.port), str(project),
                 f"{self.target}:{prefix}-{i}"])
            start = f"cd ~/{prefix}-{i} && python3 jobs/quick.py > out.log 2>&1"
            run(self.ssh("tmux", "-L", "manual", "new", "-d", "-s", f"{session}{i}", shlex.quote(start)))
        return action

    def rsync_and_tmux(self, project: Path, target: str, session: str, *extra: str):
        """The by-hand recipe as an action of run i: `rsync -az` the project to ~/TARGET, then `ssh tmux new`
        running jobs/quick.py in session SESSION<i>; `extra` ssh options (e.g. a ControlMaster's)."""
        def action(i: int) -> None:
            ssh = " ".join([self.ssh_command_string(), *extra])
            run(["rsync", "-az", "--delete", "-e", ssh, f"{project}/", f"{self.target}:{target}/"])
            start = f"cd ~/{target} && python3 jobs/quick.py > out.log 2>&1"
            run(["ssh", *self.ssh_options(), *extra, "-p", str(self.host.port), self.target,
                 "tmux", "-L", "manual", "new", "-d", "-s", f"{session}{i}", shlex.quote(start)])
        return action


@contextmanager
def loopback(address: str = "127.0.0.9") -> Iterator[Loopback]:
    base = Path(tempfile.mkdtemp(prefix="awsrun-bench-"))
    # here, not at the top: a benchmark's child process (bench/transfer.py --child) pays no pytest import
    from tests.harness.clusters import ssh_cluster_on
    from tests.harness.sshd import SshHost, free_port

    host = SshHost("bench", address, free_port(address), base / "host").start()
    home = base / "awsrun-home"
    try:
        home.mkdir(mode=0o700)
        cluster = ssh_cluster_on(host, base, home, base / "keys")
        yield Loopback(base, host, cluster.key, home, base / "known_hosts")
    finally:
        from awsrun.remote.openssh import close_masters

        close_masters(home / "sockets", None)  # the SSH masters awsrun kept open end with the bench
        host.stop()
        shutil.rmtree(base, ignore_errors=True)


def make_project(root: Path, files: int, total_bytes: int, seed: int = 5) -> Path:
    """`files` files of about total_bytes/files each under a few packages: nine in ten are Python-like
    text, one in ten random bytes (weights, images): what a small ML project holds."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    (root / "jobs").mkdir()
    (root / "jobs" / "quick.py").write_text("print('hello from the job')\n")
    each = total_bytes // files
    words = ["def", "return", "self", "tensor", "batch", "loss", "model", "import", "torch", "for", "in", "x", "y"]
    for index in range(files - 2):
        path = root / f"pkg{index % 8}" / f"mod{index}.py"
        path.parent.mkdir(exist_ok=True)
        if index % 10 == 9:
            path.with_suffix(".bin").write_bytes(rng.randbytes(each))
            continue
        lines, size = [], 0
        while size < each:
            line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + f"  # {rng.randint(0, 10**6)}\n"
            lines.append(line)
            size += len(line)
        path.write_text("".join(lines))
    return root


@dataclass
class Case:
    label: str
    action: Callable[[int], None]
    before: Callable[[int], None] | None = None


def interleaved_samples(cases: list[Case], runs: int) -> dict[str, list[float]]:
    """ms of each run of each case, the cases taking turns run after run, so a change in the machine's load
    (other work on a shared box) weighs on all of them alike; the order flips every run, so no case always
    pays for what the one before it left behind (write-back, caches)."""
    samples: dict[str, list[float]] = {case.label: [] for case in cases}
    for index in range(runs):
        for case in (cases if index % 2 == 0 else cases[::-1]):
            if case.before is not None:
                case.before(index)
            start = time.perf_counter()
            case.action(index)
            samples[case.label].append((time.perf_counter() - start) * 1000)
    return samples


def interleaved_medians(cases: list[Case], runs: int) -> list[tuple[str, float]]:
    """Median ms of each case (interleaved_samples)."""
    return [(label, statistics.median(ms)) for label, ms in interleaved_samples(cases, runs).items()]


def print_spread(title: str, samples: dict[str, list[float]], baseline: str) -> None:
    """Each case's median ms and its ratio to `baseline`: the median and the range (min-max) of the ratios
    of run i to the baseline's run i, so the noise of a loaded box shows."""
    base = samples[baseline]
    print(f"\n{title}")
    print(f"{'what':58} {'median ms':>10} {'x ' + baseline[:18]:>22} {'ratio min-max':>14}")
    for label, ms in samples.items():
        ratios = [one / other for one, other in zip(ms, base)]
        print(f"{label:58} {statistics.median(ms):10.0f} {statistics.median(ratios):22.2f} "
              f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>14}")


def run(argv: list[str], **kwargs) -> None:
    completed = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if completed.returncode != 0:
        raise SystemExit(f"{argv[:4]}... failed ({completed.returncode}): {completed.stderr[-2000:]}")


def print_table(title: str, rows: list[tuple[str, float]], baseline: str) -> None:
    base = dict(rows)[baseline]
    print(f"\n{title}")
    print(f"{'what':58} {'median ms':>10} {'x ' + baseline[:18]:>22}")
    for label, ms in rows:
        print(f"{label:58} {ms:10.0f} {ms / base:22.2f}")
