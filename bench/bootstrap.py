"""Bootstrap time on a loopback host: the first run (venv + CPU torch 2.13.0 from the local wheelhouse)
against the same work done by hand, and the second run (everything done: only checks and verify)
against its floors: an SSH round trip, and `import torch` in the venv.

    sudo python bench/bootstrap.py [--runs 5]

Starts its own sshd host (tests/harness/sshd.py: needs root, a user `ubuntu`, and the wheelhouse that
`bash .ci/run` builds in /var/cache/awsrun-wheels). Everything goes through awsrun's paramiko layer, one
connection per case as awsrun does. Deleting the two torch venvs at the end takes a while on some disks.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from awsrun.remote.ssh import SshTarget, connect  # noqa: E402
from awsrun.settings import Settings  # noqa: E402
from awsrun.setup.bootstrap import bootstrap_node  # noqa: E402
from awsrun.state import ClusterRecord, InstanceRecord, State  # noqa: E402
from tests.harness.sshd import SshHost, free_port  # noqa: E402

WHEELHOUSE = Path("/var/cache/awsrun-wheels")
PIP_ARGS = f"--no-index --find-links {WHEELHOUSE}"
ADDRESS = "127.0.0.10"


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of the fast cases (median shown)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/bootstrap.py needs root (it starts an sshd host); run it as CI does", file=sys.stderr)
        return 2
    if not list(WHEELHOUSE.glob("torch-2.13.0*.whl")):
        print(f"no torch wheel in {WHEELHOUSE}: run `bash .ci/run` (its 'python packages' part builds it)",
              file=sys.stderr)
        return 2

    base = Path(tempfile.mkdtemp(prefix="awsrun-bench-bootstrap-"))
    host = SshHost("bench-bootstrap", ADDRESS, free_port(ADDRESS), base / "host").start()
    try:
        key = base / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        host.authorize(key.with_suffix(".pub").read_text())
        alias = f"{host.address}:{host.port}"
        target = SshTarget(host=host.address, port=host.port, user="ubuntu", key_path=key,
                           known_hosts=base / "known_hosts", alias=alias)
        settings = Settings(pip_args=PIP_ARGS)

        def bootstrap(log: str) -> None:
            remote = connect(target, wait_s=10)
            try:
                report = bootstrap_node(remote, settings, instance_type=None, log_path=base / log,
                                        on_line=lambda line: None, reconnect=lambda: connect(target, wait_s=30))
            finally:
                remote.close()
            assert report.verify is not None and report.verify.torch == "2.13.0+cpu", report

        def over_ssh(command: str) -> None:
            remote = connect(target, wait_s=10)
            try:
                remote.run(command).check()
            finally:
                remote.close()

        rows: list[tuple[str, float, str]] = []
        manual = ("python3 -m venv ~/venvs/by-hand && "
                  f"~/venvs/by-hand/bin/pip install -q --disable-pip-version-check {PIP_ARGS} torch==2.13.0")
        rows.append(("by hand: python3 -m venv + pip install torch", timed(lambda: over_ssh(manual)), "1 run"))
        rows.append(("awsrun bootstrap, first run (fresh host)", timed(lambda: bootstrap("first.log")), "1 run"))

        home = base / "awsrun-home"
        home.mkdir(mode=0o700)
        state = State.open(home / "state.db")
        state.put_cluster(ClusterRecord("bench", "ssh", config={"ssh_key": str(key)}))
        state.put_instance(InstanceRecord(id=alias, cluster="bench", state="running",
                                          extra={"host": host.address, "port": host.port, "user": "ubuntu"}))
        state.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWSRUN_")}
        env.update({"AWSRUN_HOME": str(home), "AWSRUN_PIP_ARGS": PIP_ARGS, "PYTHONPATH": str(REPO)})
        cli = [sys.executable, "-m", "awsrun", "bootstrap", "--cluster", "bench"]

        fast = [
            ("SSH connect + `true`", lambda: over_ssh("true")),
            ("SSH connect + `import torch` in the venv", lambda: over_ssh("~/venvs/awsrun/bin/python -c 'import torch'")),
            ("awsrun bootstrap, second run (bootstrap_node)", lambda: bootstrap("second.log")),
            ("`awsrun bootstrap` CLI, second run", lambda: subprocess.run(cli, env=env, check=True,
                                                                         capture_output=True)),
        ]
        samples: dict[str, list[float]] = {label: [] for label, _ in fast}
        for _ in range(args.runs):  # interleaved, so a busy machine weighs on every case alike
            for label, action in fast:
                samples[label].append(timed(action))
        for label, _ in fast:
            values = samples[label]
            rows.append((label, statistics.median(values), f"median of {len(values)}, "
                                                           f"{min(values):.2f}-{max(values):.2f}"))
    finally:
        host.stop()
        started = time.perf_counter()
        shutil.rmtree(base, ignore_errors=True)
        cleanup = time.perf_counter() - started

    width = max(len(label) for label, _, _ in rows)
    print(f"{'case':{width}}  {'seconds':>8}  runs")
    for label, seconds, note in rows:
        print(f"{label:{width}}  {seconds:8.2f}  {note}")
    print(f"(deleting the two torch venvs afterwards: {cleanup:.1f}s; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
