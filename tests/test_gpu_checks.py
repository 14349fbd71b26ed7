"""bench/gpu_checks.py, the one script a briefly lent GPU runs (issue 18), dry-run on CPU with its step counts
scaled down: a crash found here does not cost the GPU's few minutes."""

from __future__ import annotations

import re

import pytest

from tests.stn_helpers import REPO, explain, job_env, run_python

CHECKS = ("sync", "variants", "job", "compile", "accuracy", "resume", "profile")


@pytest.mark.slow
def test_every_gpu_check_runs_dry_on_cpu():
    result = run_python(REPO / "bench" / "gpu_checks.py", timeout=300,
                        env=job_env(GPU_CHECKS_DEVICE="cpu", GPU_CHECKS_SCALE="0.01"))
    assert result.returncode == 0, explain(result)
    assert "FAILED" not in result.stdout
    for check in CHECKS:
        assert f"== {check} took " in result.stdout, check
    lines = result.stdout.splitlines()
    assert sum(line.startswith("sync check, ") and "no host sync" in line for line in lines) == 2
    assert sum(line.startswith("variant batch 256 graph ") for line in lines) == 4
    assert sum(line.startswith("job --graph ") for line in lines) == 3
    assert sum(line.startswith("job --compile --graph on ") for line in lines) == 2
    assert [line.split()[1] for line in lines if line.startswith("accuracy ")] == ["fcn", "cnn", "stfcn", "stcnn"]
    resume = next(line for line in lines if line.startswith("resume: "))
    assert "first run exit 143" in resume and ", resuming;" in resume, resume
    stopped_at = re.search(r"final step 200, resumed from (\d+);", resume)
    assert stopped_at and 20 <= int(stopped_at[1]) < 200 and "(each step once)" in resume, resume
