"""How fast does `awsrun` start? `awsrun --help`, `--version` and `status --cached` against `python -c pass`
and `python -c 'import click'`, measured in the same run: several rounds, each a median of N interleaved
runs, and the spread of the ratios across rounds (a loaded machine shows up as a wide spread).

    python bench/cli_startup.py [--rounds 5] [--runs 11]

awsrun's modules load from their bytecode cache, as after `pip install`: the warm-up runs write it, with
PYTHONDONTWRITEBYTECODE removed. (A source checkout without __pycache__ under PYTHONDONTWRITEBYTECODE=1
compiles every module on every command: measured here, that alone took `status --cached` to about 3x.)

Goals (README): `--help` <= 1.5x and `status --cached` <= 2x `python -c 'import click'`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's awsrun, not another install
BASELINE = "python -c 'import click'"
CASES = [
    ("python -c pass", [sys.executable, "-c", "pass"]),
    (BASELINE, [sys.executable, "-c", "import click"]),
    ("awsrun --help", [sys.executable, "-m", "awsrun", "--help"]),
    ("awsrun --version", [sys.executable, "-m", "awsrun", "--version"]),
    ("awsrun status --cached", [sys.executable, "-m", "awsrun", "status", "--cached"]),
]
GOALS = {"awsrun --help": 1.5, "awsrun status --cached": 2.0}


def once_ms(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env, cwd=cwd)
    return (time.perf_counter() - start) * 1000


def one_round(runs: int, env: dict[str, str], cwd: str) -> dict[str, float]:
    """Median ms per case; the cases interleaved, so a burst of load hits them all alike."""
    samples: dict[str, list[float]] = {label: [] for label, _ in CASES}
    for _ in range(runs):
        for label, argv in CASES:
            samples[label].append(once_ms(argv, env, cwd))
    return {label: statistics.median(values) for label, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        # a state with one cluster for `status --cached`, and a directory with no project config
        env = {**os.environ, "AWSRUN_HOME": os.path.join(scratch, "home"),
               "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
        # as installed: modules load from their bytecode cache (written by the warm-up runs); with
        # PYTHONDONTWRITEBYTECODE every awsrun run would compile its modules while click loads its .pyc
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "awsrun", "up", "--local", "--no-bootstrap"], env=env, cwd=scratch,
                       check=True, capture_output=True)
        for _, argv in CASES:  # warm the page cache and the bytecode caches
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=scratch)
        rounds = [one_round(args.runs, env, scratch) for _ in range(args.rounds)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.rounds} rounds x {args.runs} runs, {os.cpu_count()} CPUs, load average {load:.2f} at the end")
    print(f"{'command':28} {'median ms':>10} {'ms range':>14} {'x import click':>14} {'ratio range':>13}  goal")
    for label, _ in CASES:
        ms = [r[label] for r in rounds]
        ratios = [r[label] / r[BASELINE] for r in rounds]
        goal = GOALS.get(label)
        verdict = "" if goal is None else f"<= {goal}x: {'met' if statistics.median(ratios) <= goal else 'NOT met'}"
        print(f"{label:28} {statistics.median(ms):10.1f} {min(ms):6.1f}-{max(ms):<7.1f} "
              f"{statistics.median(ratios):14.2f} {min(ratios):6.2f}-{max(ratios):<6.2f}  {verdict}")


if __name__ == "__main__":
    main()
