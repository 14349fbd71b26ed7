"""bench/train_throughput.py runs as users run it, on CPU: every CPU mode, compile across a batch change (the
crash issue 18 reported), and each row compared with the PyTorch tutorial measured in the same run."""

from __future__ import annotations

import re

import pytest

from tests.stn_helpers import REPO, explain, run_python

ROW = re.compile(r"^\s*(\d+)  (.+?)\s{2,}([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)x$")
PIPELINES = ("PyTorch tutorial STN", "real loop RTS, eager", "real loop RTS, compile")


@pytest.mark.slow
def test_bench_compares_every_cpu_mode_with_the_tutorial_across_a_batch_change():
    result = run_python(
        REPO / "bench" / "train_throughput.py", "--device", "cpu", "--dataset", "digits", "--seconds", "0.3",
        "--rounds", "1", "--warmup", "2", "--batch-sizes", "8", "16", "--modes", "eager", "compile",
        "--real-loop-only", "--threads", "1",
    )
    assert result.returncode == 0, explain(result)
    rows = {}
    for line in result.stdout.splitlines():
        if match := ROW.match(line):
            batch, label = int(match[1]), match[2]
            ms_per_step, images_per_s, versus = float(match[5]), int(match[6].replace(",", "")), float(match[8])
            rows[(batch, label)] = (ms_per_step, images_per_s, versus)
    assert sorted(rows) == sorted((batch, label) for batch in (8, 16) for label in PIPELINES), result.stdout
    for (batch, label), (ms_per_step, images_per_s, versus) in rows.items():
        assert images_per_s == pytest.approx(batch / ms_per_step * 1e3, rel=0.01, abs=1), (batch, label)
        tutorial = rows[(batch, "PyTorch tutorial STN")][1]
        assert versus == pytest.approx(images_per_s / tutorial, abs=0.01), (batch, label)
        if label.startswith("real loop"):
            assert f"{label} at batch {batch}: {images_per_s:,} img/s = {versus:.2f}x the tutorial at batch {batch}" \
                in result.stdout
