"""Without rsync, submit in one round trip (awsrun.pushcache): after a first submit the remembered manifest lets the next
one check + sync + launch in a single remote command; anything changed on the target sends it back to
two; a running job of that name refuses before a file is written. Counted on the local provider (the
same jobs.submit code as over SSH) with a wrapper that records each remote command."""
from __future__ import annotations

from pathlib import Path

import pytest

from awsrun import jobs, sync, transfer
from awsrun.home import Home
from awsrun.settings import load_settings
from tests.harness.clusters import _env_for, local_cluster, wait_for  # noqa: F401 (fixture)


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


def submit(host, project: Path, session: str, *args: str) -> jobs.SubmitResult:
    host.remote.commands.clear()
    return jobs.submit(host, jobs.SubmitRequest(project, "job.py", args, session))


def test_without_rsync_a_second_submit_is_one_round_trip_and_a_change_on_the_target_falls_back(
        host, project, local_cluster, monkeypatch):
    monkeypatch.setattr(transfer, "RSYNC", "rsync-not-installed")  # awsrun's own transfer, with its cache
    first = submit(host, project, "a")
    assert len(host.remote.commands) == 2 and first.sync.files_sent == 22
    (project / "m3.py").write_text("x = 'edited'\n")
    (project / "m4.py").unlink()
    second = submit(host, project, "b")
    assert len(host.remote.commands) == 1
    assert (second.sync.files_sent, second.sync.deleted, second.sync.unchanged) == (1, 1, 20)
    copy = local_cluster.project(project)
    assert (copy / "m3.py").read_text() == "x = 'edited'\n" and not (copy / "m4.py").exists()
    assert len(host.remote.commands) == 1 and submit(host, project, "c").sync.files_sent == 0
    assert len(host.remote.commands) == 1

    (copy / "m5.py").write_text("changed on the instance\n")   # the target no longer holds what was pushed
    (copy / "extra.py").write_text("only there\n")
    fallback = submit(host, project, "d")
    assert len(host.remote.commands) == 2
    assert (fallback.sync.files_sent, fallback.sync.deleted) == (1, 1)
    assert (copy / "m5.py").read_text() == "x = 5\n" and not (copy / "extra.py").exists()
    assert submit(host, project, "e").sync.files_sent == 0 and len(host.remote.commands) == 1
    state = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file() and "runs" not in p.parts}
    assert state == set(sync.scan(project).entries)


def test_a_running_job_refuses_before_any_file_is_written(host, project, local_cluster):
    submit(host, project, "busy", "60")
    wait_for(lambda: "busy" in jobs.running_sessions(host), timeout=30, what="the job to run")
    (project / "m1.py").write_text("x = 'not yet'\n")
    with pytest.raises(jobs.JobRunning):
        submit(host, project, "busy")
    assert len(host.remote.commands) == 1
    assert (local_cluster.project(project) / "m1.py").read_text() == "x = 1\n"
    jobs.kill(host, "busy", force=True)
    submit(host, project, "busy")
    assert (local_cluster.project(project) / "m1.py").read_text() == "x = 'not yet'\n"
