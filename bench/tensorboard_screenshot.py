#!/usr/bin/env python3
"""A screenshot of TensorBoard served by `awsrun tensorboard` through its SSH tunnel, rendered by headless
Chromium (Debian's `chromium`), so a person can see that it works.

On one loopback sshd host of the test harness (bench/loopback_host.py): the real bootstrap makes the torch
venv (offline, from the test wheelhouse /var/cache/awsrun-wheels that `.ci/run` builds, which also holds
tensorboard), `awsrun submit -f` runs jobs/train_stn.py on the digits, `awsrun tensorboard` installs
TensorBoard into the venv, starts it on the host's 127.0.0.1 and opens the tunnel; Chromium loads the
printed local URL. Prints each phase's time. Needs root (the harness sshd) and `apt-get install chromium`.

    python bench/tensorboard_screenshot.py [--out docs/tensorboard.png] [--steps 200]
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopback_host import REPO, loopback

from awsrun.remote.ssh import SshTarget, connect
from awsrun.setup.bootstrap import bootstrap_node
from tests.harness.job_packages import link_packages
from tests.harness.sshd import USER
from tests.harness.torch_host import PIP_ARGS, settings

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1280,900"]


def timed(label: str, started: float) -> float:
    now = time.monotonic()
    print(f"{label:44} {now - started:6.1f} s", flush=True)
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "tensorboard.png")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--view", default="scalars&tagFilter=loss%7Caccuracy%7Cerror",
                        help="the URL's fragment: dashboard and tag filter")
    parser.add_argument("--budget-ms", type=int, default=20000, help="Chromium's virtual time for the page's JS")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install -y chromium")
    with loopback() as box, tempfile.TemporaryDirectory(prefix="awsrun-shot-") as work:
        work_dir = Path(work)
        work_dir.chmod(0o755)  # the host's user reads the job's PYTHONPATH below it
        env = {**box.env(), "AWSRUN_PIP_ARGS": PIP_ARGS}
        start = time.monotonic()
        remote = connect(SshTarget(host=box.host.address, port=box.host.port, user=USER, key_path=box.key,
                                   known_hosts=box.awsrun_home / "known_hosts",
                                   alias=f"{box.host.address}:{box.host.port}"), wait_s=10)
        try:
            bootstrap_node(remote, settings(), instance_type=None, log_path=work_dir / "bootstrap.log",
                           on_line=lambda line: None, reconnect=lambda: remote)
        finally:
            remote.close()
        start = timed("bootstrap (torch venv from the wheelhouse)", start)

        project = work_dir / "stn"
        project.mkdir()
        (project / "pyproject.toml").write_text("[project]\nname = 'stn'\n")
        # without requirements.txt: submit would pip-install it from the wheelhouse, which lacks matplotlib
        shutil.copytree(REPO / "jobs", project / "jobs",
                        ignore=shutil.ignore_patterns("__pycache__", "runs", "data", "requirements.txt"))
        packages = link_packages(work_dir / "pythonpath")
        awsrun = [sys.executable, "-m", "awsrun"]
        board = subprocess.Popen([*awsrun, "tensorboard"], cwd=project, env=env, stdout=subprocess.PIPE, text=True)
        try:
            url = board.stdout.readline().strip()
            if not url.startswith("http://"):
                raise SystemExit(f"awsrun tensorboard printed no URL (exit {board.wait()})")
            start = timed("awsrun tensorboard (install, start, tunnel)", start)
            trained = subprocess.run(
                [*awsrun, "submit", "-f", "--env", f"PYTHONPATH={packages}", "train_stn.py", "--dataset", "digits",
                 "--model", "fcn", "--steps", str(args.steps), "--batch-size", "32", "--log-every", "10",
                 "--eval-every", "50", "--ckpt-every", str(args.steps)],
                cwd=project, env=env, capture_output=True, text=True)
            if trained.returncode != 0:
                raise SystemExit(f"training failed: {trained.stdout[-2000:]} {trained.stderr[-1000:]}")
            start = timed(f"train_stn, {args.steps} steps on the digits", start)
            time.sleep(6)  # TensorBoard rereads the logdir every 5 s
            args.out.parent.mkdir(parents=True, exist_ok=True)
            shot = subprocess.run(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={work_dir / 'chromium'}",
                 f"--virtual-time-budget={args.budget_ms}", f"--screenshot={args.out.resolve()}",
                 f"{url}#{args.view}"],
                capture_output=True, text=True, timeout=120)
            if shot.returncode != 0 or not args.out.exists():
                raise SystemExit(f"chromium failed ({shot.returncode}): {shot.stderr[-2000:]}")
            timed("chromium screenshot through the tunnel", start)
        finally:
            board.send_signal(signal.SIGINT)
            board.wait(timeout=15)
            subprocess.run([*awsrun, "kill", "--force", "tensorboard"], cwd=project, env=env, capture_output=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB) from {url}")


if __name__ == "__main__":
    main()
