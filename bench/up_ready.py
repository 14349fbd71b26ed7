"""`awsrun up` on a ready, bootstrapped EC2 instance, end to end, against doing the readiness check by hand,
in the same run: the moto EC2 endpoint of the test harness, one loopback sshd host behind the harness
ProxyCommand, the CPU torch wheel from the CI wheelhouse. The first `up` launches and bootstraps (not
timed: installs); then, medians of N:

    ssh true, fresh                          one SSH handshake by hand
    ssh + import torch, fresh (by hand)      what checking readiness by hand costs
    awsrun up, master kept open              EC2 reconcile + key pair/security group + SSH check + one
                                             bootstrap probe (the ready stamp matches: nothing re-checked)
    awsrun up, no master open                the same with a fresh SSH handshake

Needs root (sshd) and /var/cache/awsrun-wheels (bash .ci/run builds it).

    python bench/up_ready.py [--runs 5]
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
os.environ.setdefault("MOTO_AMIS_PATH", "")

from tests.harness import ec2_endpoint  # noqa: E402
from tests.harness.cli import guarded_env  # noqa: E402
from tests.harness.fleet import Fleet  # noqa: E402

WHEELHOUSE = Path("/var/cache/awsrun-wheels")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ["MOTO_AMIS_PATH"] = ec2_endpoint.amis_path()
    base = Path(tempfile.mkdtemp(prefix="awsrun-bench-up-"))
    base.chmod(0o711)  # user ubuntu reaches the hosts' directories below it
    (base / "fleet").mkdir()
    endpoint = ec2_endpoint.Ec2Endpoint.start()
    fleet = Fleet.start(base / "fleet", count=1)
    home = base / "home"
    home.mkdir(mode=0o700)
    project = base / "project"
    project.mkdir()
    env = guarded_env({"AWSRUN_HOME": str(home), "AWS_ENDPOINT_URL": endpoint.url, "AWSRUN_CALLER_IP_URL": "off",
                       "AWSRUN_SSH_PROXY_COMMAND": fleet.proxy_command,
                       "AWSRUN_PIP_ARGS": f"--no-index --find-links {WHEELHOUSE}"})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    up = [sys.executable, "-m", "awsrun", "up", "--ssh-cidr", "203.0.113.7/32", "--instance-type", "t3.medium"]

    def awsrun(argv: list[str]) -> None:
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{argv[3:5]} failed: {done.stderr[-3000:]}")

    try:
        started = time.perf_counter()
        awsrun(up)
        print(f"first up (launch + bootstrap, not in the table): {time.perf_counter() - started:.1f} s")
        host = fleet.hosts[0]
        key = home / "keys" / "awsrun_ed25519"
        by_hand = ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                   "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-p", str(host.port),
                   f"ubuntu@{host.address}"]

        def close_masters() -> None:
            from awsrun.remote.openssh import close_masters as close

            close(home / "sockets", None)

        cases = [
            ("ssh true, fresh", lambda: subprocess.run(by_hand + ["true"], check=True, capture_output=True), None),
            ("by hand: ssh + import torch in the venv, fresh",
             lambda: subprocess.run(by_hand + ["~/venvs/awsrun/bin/python -c 'import torch'"], check=True,
                                    capture_output=True), None),
            ("awsrun up (ready instance), master kept open", lambda: awsrun(up), None),
            ("awsrun up (ready instance), no master open", lambda: awsrun(up), close_masters),
        ]
        awsrun(up)  # the second up opens the master (the first one pinned the key over paramiko)
        samples: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for _ in range(args.runs):
            for label, action, before in cases:
                if before:
                    before()
                start = time.perf_counter()
                action()
                samples[label].append(time.perf_counter() - start)
        print(f"\nup on a ready, bootstrapped EC2 instance (moto + loopback sshd), median of {args.runs}\n")
        print("| what | median s | goal |")
        print("|---|---:|---|")
        for label, _, _ in cases:
            goal = "<= 3 s" if label.startswith("awsrun") else ""
            print(f"| {label} | {statistics.median(samples[label]):.2f} | {goal} |")
        awsrun([sys.executable, "-m", "awsrun", "down", "--yes"])
    finally:
        fleet.stop()
        endpoint.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
