"""Without rsync, submit in one round trip (awsrun.transfer.pushcache): after a first submit the remembered manifest lets the next
one check + sync + launch in a single remote command; anything changed on the target sends it back to
two; a running job of that name refuses before a file is written. Counted on the local provider (the
same submission.submit code as over SSH) with a wrapper that records each remote command."""
from __future__ import annotations

from pathlib import Path

import pytest

from awsrun.home import Home
from awsrun.job import jobs, submission
from awsrun.settings import load_settings
from tests.harness.clusters import (  # noqa: F401 (fixture)
    _env_for,
    local_cluster,
    wait_for,
)


class Counting:
    def __init__(self, inner):
        self.inner, self.name, self.commands = inner, inner.name, []

    def run(self, command, **kwargs):
        self.commands.append(command)
        return self.inner.run(command, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def host(local_cluster, awsrun_home, project, monkeypatch):
    for name, value in _env_for(local_cluster, None).items():
        monkeypatch.setenv(name, value)
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (project / "job.py").write_text("import sys, time\ntime.sleep(float(sys.argv[1]) if sys.argv[1:] else 0)\n")
    for index in range(20):
        (project / f"m{index}.py").write_text(f"x = {index}\n")
    host = jobs.open_host(Home(awsrun_home), load_settings(project))
    host.remote = Counting(host.remote)
    yield host
    host.close()


def submit(host, project: Path, session: str, *args: str) -> submission.SubmitResult:
    host.remote.commands.clear()
    return submission.submit(host, submission.SubmitRequest(project, "job.py", args, session))


def test_a_running_job_refuses_before_any_file_is_written(host, project, local_cluster):
    submit(host, project, "busy", "60")
    wait_for(lambda: "busy" in jobs.running_sessions(host), timeout=30, what="the job to run")
    (project / "m1.py").write_text("x = 'not yet'\n")
    with pytest.raises(submission.JobRunning):
        submit(host, project, "busy")
    assert len(host.remote.commands) == 1
    assert (local_cluster.project(project) / "m1.py").read_text() == "x = 1\n"
    jobs.kill(host, "busy", force=True)
    submit(host, project, "busy")
    assert (local_cluster.project(project) / "m1.py").read_text() == "x = 'not yet'\n"
