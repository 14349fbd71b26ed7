"""How fast does `awsrun` start? `awsrun --help`/`--version` against `python -c pass` and
`python -c 'import click'`, measured in the same run (median of N).

    python bench/cli_startup.py [--runs 15]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = [
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("python -c 'import click'", [sys.executable, "-c", "import click"]),
    ("awsrun --help", [sys.executable, "-m", "awsrun", "--help"]),
    ("awsrun --version", [sys.executable, "-m", "awsrun", "--version"]),
]


def median_ms(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for _, argv in CASES:  # warm the page cache
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {label: median_ms(argv, args.runs) for label, argv in CASES}
    baseline = results["python -c 'import click'"]
    print(f"{'command':32} {'median ms':>10} {'x import click':>15}")
    for label, ms in results.items():
        print(f"{label:32} {ms:10.1f} {ms / baseline:15.2f}")


if __name__ == "__main__":
    main()
