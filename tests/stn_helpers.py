"""Helpers for tests/test_train_stn.py: run jobs/train_stn.py as users do, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
JOB = JOBS / "train_stn.py"


def job_env(**extra: str) -> dict[str, str]:
    from tests.harness.cli import (
        guarded_env,  # the job's network, too, stays on loopback
    )

    env = {k: v for k, v in guarded_env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # One torch thread per job: on a loaded 2-core machine two threads thrash (the same 300-step
    # run took 40 s with one thread and 60-180 s with two), and one costs little when it is idle.
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_python(script: Path, *args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    """A script of the repository (the job, a bench) run as users run it, its output captured."""
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=REPO, env=env or job_env(),
        capture_output=True, text=True, timeout=timeout,
    )


def run_job(*args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_python(JOB, *args, timeout=timeout, env=env)


def start_job(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(JOB), *args], cwd=REPO, env=job_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
