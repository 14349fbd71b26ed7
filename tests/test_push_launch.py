"""A submit over SSH is one session: rsync with the launch inside its session, or (nothing changed since
awsrun's last push there) one command that checks the target still holds that tree and launches, with no
rsync at all. A change on the target sends it back to rsync; a running job refuses before a file is
written. Sessions are counted through awsrun's own layer: each remote.run and each rsync it starts."""
from __future__ import annotations

import pytest

from awsrun.job import jobs, submission
from awsrun.transfer import pushcache, scan
from awsrun.transfer import rsync as transfer
from tests.harness.clusters import ssh_cluster, wait_for  # noqa: F401 (fixture)
from tests.test_transfer import host_for


class Sessions:
    """Every SSH session awsrun opens: its commands (remote.run) and its rsync runs."""

    def __init__(self, host, monkeypatch):
        self.runs: list[str] = []
        self.rsyncs = 0
        inner_run, inner_rsync = host.remote.run, transfer.run_rsync

        def run(command, **kwargs):
            self.runs.append(command)
            return inner_run(command, **kwargs)

        def rsync(*args, **kwargs):
            self.rsyncs += 1
            return inner_rsync(*args, **kwargs)

        monkeypatch.setattr(host.remote, "run", run)
        monkeypatch.setattr(transfer, "run_rsync", rsync)

    def count(self) -> tuple[int, int]:
        """(commands, rsync runs) since the last count."""
        counted = (len(self.runs), self.rsyncs)
        self.runs.clear()
        self.rsyncs = 0
        return counted


@pytest.fixture
def project_files(project):
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (project / "job.py").write_text("import sys, time\ntime.sleep(float(sys.argv[1]) if sys.argv[1:] else 0)\n")
    for index in range(20):
        (project / f"m{index}.py").write_text(f"x = {index}\n")
    (project / "link.py").symlink_to(project / "m1.py")  # an absolute target: made relative on the instance
    return project


def submit(host, project, session: str, *args: str) -> submission.SubmitResult:
    return submission.submit(host, submission.SubmitRequest(project, "job.py", args, session))


def test_a_submit_is_one_session_and_nothing_changed_sends_no_file(ssh_cluster, fleet, awsrun_home, project_files,
                                                                    monkeypatch, cli):
    project = project_files
    with host_for(ssh_cluster, fleet, awsrun_home, project, monkeypatch, cli) as host:
        sessions = Sessions(host, monkeypatch)
        first = submit(host, project, "a")
        assert sessions.count() == (0, 1) and first.sync.files_sent == 22  # the link is made by the launch step
        copy = ssh_cluster.project(project)
        assert (copy / "link.py").readlink().as_posix() == "m1.py"
        wait_for(lambda: (ssh_cluster.job("a") / "exit_code").exists(), timeout=30, what="job a")

        (project / "m3.py").write_text("x = 'edited'\n")
        second = submit(host, project, "b")
        assert sessions.count() == (0, 1) and second.sync.files_sent == 1
        assert (copy / "m3.py").read_text() == "x = 'edited'\n"

        third = submit(host, project, "c")
        assert sessions.count() == (1, 0)   # one command: the target's check, then the launch
        assert (third.sync.files_sent, third.sync.unchanged) == (0, 23)
        wait_for(lambda: (ssh_cluster.job("c") / "exit_code").exists(), timeout=30, what="job c")
        assert (ssh_cluster.job("c") / "exit_code").read_text().strip() == "0"

        (copy / "m5.py").write_text("changed on the instance\n")  # the target no longer holds what was pushed
        (copy / "extra.py").write_text("only there\n")
        fallback = submit(host, project, "d")
        assert sessions.count() == (1, 1)   # the check said CHANGED, wrote nothing; rsync put it right
        assert fallback.sync.files_sent == 1
        assert (copy / "m5.py").read_text() == "x = 5\n" and not (copy / "extra.py").exists()
        wait_for(lambda: (ssh_cluster.job("d") / "exit_code").exists(), timeout=30, what="job d")
        assert submit(host, project, "e").sync.files_sent == 0 and sessions.count() == (1, 0)
    remote = {p.relative_to(copy).as_posix() for p in copy.rglob("*")
              if (p.is_file() or p.is_symlink()) and "runs" not in p.parts}
    assert remote == set(scan.scan(project).entries)


@pytest.mark.parametrize("changed", [False, True], ids=["nothing-changed", "one-file-changed"])
def test_a_running_job_refuses_before_any_file_is_written(ssh_cluster, fleet, awsrun_home, project_files,
                                                           monkeypatch, cli, changed):
    project = project_files
    with host_for(ssh_cluster, fleet, awsrun_home, project, monkeypatch, cli) as host:
        submit(host, project, "busy", "60")
        wait_for(lambda: "busy" in jobs.running_sessions(host), timeout=30, what="the job to run")
        if changed:
            (project / "m1.py").write_text("x = 'not yet'\n")
        with pytest.raises(submission.JobRunning):
            submit(host, project, "busy")
        assert (ssh_cluster.project(project) / "m1.py").read_text() == "x = 1\n"
        jobs.kill(host, "busy", force=True)
        submit(host, project, "busy")
    if changed:
        assert (ssh_cluster.project(project) / "m1.py").read_text() == "x = 'not yet'\n"


def test_the_remembered_digest_counts_whole_seconds_as_the_target_does(tmp_path):
    """An rsync without nanosecond times on one side still gives the target the remembered digest."""
    cache = pushcache.ManifestCache(tmp_path, "c", "i", "~/awsrun/p")
    cache.save({"a.py": ["f", 3, 1_700_000_000_123_456_789, 0o644], "l": ["l", "a.py"]})
    assert cache.matches({"a.py": ["f", 3, 1_700_000_000_000_000_000, 0o644], "l": ["l", "a.py"]})
    assert cache.matches({"a.py": ["f", 4, 1_700_000_000_123_456_789, 0o644], "l": ["l", "a.py"]}) is None
    assert cache.matches({"a.py": ["f", 3, 1_700_000_001_123_456_789, 0o644], "l": ["l", "a.py"]}) is None
    assert cache.matches({"a.py": ["f", 3, 1_700_000_000_123_456_789, 0o755], "l": ["l", "a.py"]}) is None
