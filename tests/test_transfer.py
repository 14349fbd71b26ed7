"""awsrun.transfer.rsync: rsync moves the files, and the guarantees stay. The ignore tiers as rsync filter rules
decide exactly as the walker does; a push deletes what the project lost and nothing ignored; deltas,
resumed partial files, vanished files, hostile names and same-named projects, over the real rsync and the
loopback SSH hosts."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from awsrun.job import jobs, submission
from awsrun.job.projects import project_remote_dir
from awsrun.remote.local import LocalRemote
from awsrun.transfer import rsync, rsync_pull, scan
from tests.harness.clusters import (  # noqa: F401 (fixtures)
    job_cluster,
    local_cluster,
    ssh_cluster,
    wait_for,
)
from tests.harness.files import tree

MB = 1 << 20



def rsync_would_send(root: Path) -> set[str]:
    """The files (and links) rsync sends with the project's filter rules: a dry run, listed by name."""
    rules = b"".join(r.encode() + b"\0" for r in rsync.filter_rules(scan.scan(root)))
    listed = subprocess.run(["rsync", "-rl", "--dry-run", "--from0", "--filter=. -", "--out-format=%n",
                             f"{root}/", str(root.parent / "nowhere") + "/"], input=rules, capture_output=True)
    assert listed.returncode == 0, listed.stderr
    return {line for line in listed.stdout.decode().splitlines() if line and not line.endswith("/")}


IGNORE_CASES = [
    # name, files, extra files holding rules
    ("defaults", {"a.py": "", "pkg/__pycache__/a.pyc": "", "b.pyc": "", ".git/HEAD": "", "runs/x": "",
                  "data/set": "", "sub/data/kept": "", "sub/runs/kept": "", "node_modules/m.js": ""}, {}),
    ("gitignore order and negation", {"keep.log": "", "other.log": "", "x.tmp": "", "deep/y.tmp": ""},
     {".gitignore": "*.log\n!keep.log\n*.tmp\n"}),
    ("last rule of a tier wins", {"keep.log": "", "other.log": ""}, {".gitignore": "!keep.log\n*.log\n"}),
    ("anchored and directory-only", {"build/a": "", "src/build/b": "", "build2": "", "logs": "", "d/logs/x": ""},
     {".gitignore": "/build/\nlogs/\n"}),
    ("nested gitignore applies below it", {"a/x.bin": "", "x.bin": "", "a/b/x.bin": "", "b/x.bin": ""},
     {"a/.gitignore": "*.bin\n"}),
    ("double star and classes", {"a/b/c/t.txt": "", "t.txt": "", "q1": "", "q2": "", "qx": "", "m/n/o": ""},
     {".gitignore": "**/t.txt\nq[0-9]\nm/**/o\n"}),
    ("escapes and spaces", {"#x": "", "!bang": "", "a b": "", "star*": "", "stary": ""},
     {".gitignore": "\\#x\n\\!bang\na b\nstar\\*\n"}),
    ("awsrunignore beats gitignore and re-includes data", {"data/set": "", "data/big/raw": "", "secret": "",
                                                           "notes.md": ""},
     {".gitignore": "notes.md\n", ".awsrunignore": "!/data/\ndata/big/\nsecret\n!notes.md\n"}),
    ("a file in an excluded directory stays out", {"out/keep.txt": "", "out/x": ""},
     {".gitignore": "out/\n!out/keep.txt\n"}),
]


@pytest.mark.parametrize("name, files, rules", IGNORE_CASES, ids=[c[0] for c in IGNORE_CASES])
def test_rsync_filter_rules_send_exactly_what_the_walker_lists(tmp_path, name, files, rules):
    root = tree(tmp_path / "p", {**files, **rules})
    assert rsync_would_send(root) == set(scan.scan(root).entries)


def test_push_copies_exactly_keeps_ignored_results_and_deletes_what_the_project_lost(tmp_path):
    root = tree(tmp_path / "p", {"a.py": "a", "pkg/b.py": "b" * 5000, "pkg/deep/c.py": "c", "n\u00e9w line.py": "x"})
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o750)
    (root / "rel").symlink_to("pkg/b.py")
    (root / "abs").symlink_to(root / "a.py")            # inside, absolute: made relative on the instance
    (root / "out").symlink_to("/etc/passwd")            # leaves the project: never sent
    target = tmp_path / "machine" / "p"
    first = rsync.push(LocalRemote(), scan.scan(root), str(target))
    assert "not synced: symlink 'out' -> '/etc/passwd' leads outside the project" in first.warnings
    assert not os.path.lexists(target / "out") and not os.path.lexists(target / "abs")
    assert subprocess.run(["bash", "-c", rsync.link_steps(scan.scan(root), str(target))]).returncode == 0
    assert os.readlink(target / "abs") == "a.py" and os.readlink(target / "rel") == "pkg/b.py"
    for rel in ("a.py", "pkg/b.py", "run.sh", "n\u00e9w line.py"):
        here, there = (root / rel).stat(), (target / rel).stat()
        assert (target / rel).read_bytes() == (root / rel).read_bytes()
        assert (there.st_mtime_ns // 10**9, stat.S_IMODE(there.st_mode)) == (here.st_mtime_ns // 10**9,
                                                                            stat.S_IMODE(here.st_mode))
    again = rsync.push(LocalRemote(), scan.scan(root), str(target))
    assert (again.files_sent, again.deleted, again.bytes_raw) == (0, 0, 0)

    tree(target, {"runs/work/model.pt": "w", "pkg/__pycache__/b.pyc": "", "data/set.bin": "d"})  # the job's
    (root / "a.py").write_text("A2")
    (root / "pkg" / "deep" / "c.py").unlink()
    (root / "pkg" / "deep").rmdir()
    third = rsync.push(LocalRemote(), scan.scan(root), str(target))
    assert (third.files_sent, third.deleted) == (1, 1)
    assert (target / "a.py").read_text() == "A2" and not (target / "pkg" / "deep").exists()
    for kept in ("runs/work/model.pt", "pkg/__pycache__/b.pyc", "data/set.bin", "abs"):
        assert os.path.lexists(target / kept), kept


def test_a_push_over_ssh_sends_the_changed_blocks_of_a_grown_file_not_the_file(ssh_cluster, fleet, awsrun_home,
                                                                                project, monkeypatch, cli):
    (project / "pyproject.toml").write_text("")
    big = project / "metrics.bin"
    big.write_bytes(os.urandom(8 * MB))
    with host_for(ssh_cluster, fleet, awsrun_home, project, monkeypatch, cli) as host:
        remote_root = project_remote_dir(host.remote_dir, project)
        first = rsync.push(host.remote, scan.scan(project), remote_root)
        assert first.bytes_sent > 8 * MB
        with big.open("ab") as handle:
            handle.write(os.urandom(MB // 4))
        grown = rsync.push(host.remote, scan.scan(project), remote_root)
    assert grown.files_sent == 1 and grown.bytes_raw == 8 * MB + MB // 4
    assert grown.bytes_sent < MB  # the appended quarter MB and the block checksums, not 8 MB
    assert (ssh_cluster.project(project) / "metrics.bin").read_bytes() == big.read_bytes()


def test_a_pull_over_ssh_sends_the_appended_bytes_and_resumes_an_interrupted_file(ssh_cluster, fleet, awsrun_home,
                                                                                 project, monkeypatch, cli, tmp_path):
    (project / "pyproject.toml").write_text("")
    remote = tree(ssh_cluster.project(project), {"runs/work/log.bin": os.urandom(6 * MB), "runs/work/a.txt": "a"})
    subprocess.run(["chown", "-R", "ubuntu:", str(ssh_cluster.project(project))], check=True)
    dest = tmp_path / "back"
    with host_for(ssh_cluster, fleet, awsrun_home, project, monkeypatch, cli) as host:
        first = jobs.pull(host, project, "work", to=dest)
        assert (first.files, first.warnings) == (2, ())
        with (remote / "runs/work/log.bin").open("ab") as handle:
            handle.write(os.urandom(MB // 4))
        grown = jobs.pull(host, project, "work", to=dest)
        assert grown.files == 1 and grown.bytes_received < MB
        assert (dest / "log.bin").read_bytes() == (remote / "runs/work/log.bin").read_bytes()

        # an interrupted pull left its part in the partial directory, never under the file's name
        (remote / "runs/work/new.bin").write_bytes(os.urandom(4 * MB))
        part = dest / rsync.PARTIAL_DIR / "new.bin"
        part.parent.mkdir()
        part.write_bytes((remote / "runs/work/new.bin").read_bytes()[: 3 * MB])
        resumed = jobs.pull(host, project, "work", to=dest)
    assert resumed.files == 1 and resumed.bytes_received < 2 * MB  # the missing MB, not the 4
    assert (dest / "new.bin").read_bytes() == (remote / "runs/work/new.bin").read_bytes()
    assert not part.parent.exists()


def test_without_rsync_on_the_instance_submit_and_pull_go_over_sftp(ssh_cluster, fleet, awsrun_home,
                                                                                project, monkeypatch, cli, tmp_path):
    monkeypatch.setattr(rsync, "REMOTE_RSYNC", "rsync-not-installed")
    tree(project, {"pyproject.toml": "", "job.py": "import os\nopen(os.environ['AWSRUN_OUTPUT_DIR'] + '/r.txt', 'w')"
                                                   ".write('done')\n"})
    with host_for(ssh_cluster, fleet, awsrun_home, project, monkeypatch, cli) as host:
        with pytest.raises(rsync.RsyncMissing):
            rsync.push(host.remote, scan.scan(project), project_remote_dir(host.remote_dir, project))
        result = submission.submit(host, submission.SubmitRequest(project, "job.py"))
        assert result.sync.files_sent == 2
        wait_for(lambda: (ssh_cluster.job("work") / "exit_code").exists(), timeout=30, what="the job to end")
        report = jobs.pull(host, project, "work", to=tmp_path / "back")
        assert report.files == 1 and (tmp_path / "back" / "r.txt").read_text() == "done"
        (project / "job.py").write_text("raise SystemExit(0)\n")
        again = submission.submit(host, submission.SubmitRequest(project, "job.py", session="second"))
        assert (again.sync.files_sent, again.sync.unchanged) == (1, 1)
        assert jobs.pull(host, project, "work", to=tmp_path / "none", exclude=("*.txt",)).files == 0
    assert (ssh_cluster.project(project) / "job.py").read_text() == "raise SystemExit(0)\n"


class host_for:
    """A JobHost on the test's cluster, opened the way the CLI opens it (after a first `jobs` pins the key,
    over the kept OpenSSH master)."""

    def __init__(self, cluster, fleet, awsrun_home, project, monkeypatch, cli):
        from tests.harness.clusters import _env_for

        for name, value in _env_for(cluster, fleet).items():
            monkeypatch.setenv(name, value)
        assert cli("jobs").exit_code == 0
        from awsrun.home import Home
        from awsrun.settings import load_settings

        self.host = jobs.open_host(Home(awsrun_home), load_settings(project))

    def __enter__(self):
        return self.host

    def __exit__(self, *exc):
        self.host.close()


# --- pull: what the instance says is checked here ---------------------------------------------------------

def test_listing_lines_that_are_no_entry_and_names_that_cannot_be_written_are_per_file_warnings(tmp_path):
    lines = ["-rw-r--r--          5 2026/12/04 16:00:00 ok.txt",
             "-rw-r--r--        1e30 2026/12/04 16:00:00 bad-size",
             "-rw-r--r--         -1 2026/12/04 16:00:00 negative",
             "-rw-r--r--          5 nan 16:00:00 bad-time",
             "-rw-r--r--          5 2026/12/04 16:00:00 new\\#012line",
             f"-rw-r--r--          5 2026/12/04 16:00:00 {'x' * 256}",
             "-rw-r--r--          5 2026/12/04 16:00:00 ../up",
             "lrwxrwxrwx         11 2026/12/04 16:00:00 passwd -> /etc/passwd",
             "crw-r--r--          0 2026/12/04 16:00:00 tty",
             "prw-r--r--          0 2026/12/04 16:00:00 pipe"]
    entries, warnings = rsync_pull.parse_listing(lines)
    plan = rsync_pull.pull_plan(entries, tmp_path, warnings)
    assert [e.name for e in plan.fetch] == ["ok.txt"]
    assert len(plan.warnings) == 9 and all(w.startswith("not pulled: ") for w in plan.warnings)
    assert "not pulled: 'new\\nline': its name holds a control character (newline, tab, ...)" in plan.warnings
    assert f"not pulled: {'x' * 256!r}: a part of its name is longer than 255 bytes" in plan.warnings
    assert "not pulled: 'passwd': it is a symlink -> '/etc/passwd'; pull copies regular files only" in plan.warnings


def test_files_that_vanish_while_a_pull_runs_are_warnings_and_the_rest_arrives(tmp_path, monkeypatch):
    """A job rotating checkpoints: a file listed, then gone when rsync reads it (rsync's exit 24)."""
    source = tree(tmp_path / "src", {"ckpt-1.pt": "1" * 1000, "metrics.jsonl": "m"})
    rotating = tmp_path / "rsync-rotating"  # removes the old checkpoint as the transfer starts
    rotating.write_text(f"#!/bin/sh\ncase \"$*\" in *files-from*) rm -f {source}/ckpt-1.pt;; esac\nexec rsync \"$@\"\n")
    rotating.chmod(0o755)
    monkeypatch.setattr(rsync, "RSYNC", str(rotating))
    report = rsync_pull.pull(LocalRemote(), str(source), tmp_path / "dest")
    assert report.files == 1 and (tmp_path / "dest" / "metrics.jsonl").read_text() == "m"
    assert len(report.warnings) == 1 and "ckpt-1.pt" in report.warnings[0], report.warnings
    assert not (tmp_path / "dest" / "ckpt-1.pt").exists()


def test_a_file_that_arrives_far_bigger_than_the_bytes_sent_is_removed(tmp_path, monkeypatch):
    """What a hostile sender's rsync could make the receiver write (a sparse 1 GiB from a few bytes, or one
    basis block repeated): whatever wrote it, a file bigger than the bytes on the wire and the file it
    replaced allow does not stay."""
    source = tree(tmp_path / "src", {"huge.bin": "tiny", "ok.txt": "fine"})
    dest = tmp_path / "dest"
    inflating = tmp_path / "rsync-inflating"
    inflating.write_text(f"#!/bin/sh\nrsync \"$@\"; code=$?\ncase \"$*\" in *files-from*) "
                         f"truncate -s 1G {dest}/huge.bin;; esac\nexit $code\n")
    inflating.chmod(0o755)
    monkeypatch.setattr(rsync, "RSYNC", str(inflating))
    report = rsync_pull.pull(LocalRemote(), str(source), dest)
    assert report.warnings == ("not pulled: 'huge.bin': it came bigger than the bytes sent allow (removed)",)
    assert report.files == 1 and not (dest / "huge.bin").exists() and (dest / "ok.txt").read_text() == "fine"


def test_pull_include_and_exclude_leave_the_rest_behind(tmp_path):
    source = tree(tmp_path / "src", {"summary.json": "{}", "curves.png": "p", "checkpoints/c1.pt": "c",
                                     "sub/metrics.json": "[]"})
    left = rsync_pull.pull(LocalRemote(), str(source), tmp_path / "a", exclude=["checkpoints/"])
    assert sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file()) == \
        ["curves.png", "sub/metrics.json", "summary.json"] and left.files == 3
    only = rsync_pull.pull(LocalRemote(), str(source), tmp_path / "b", include=["*.json"])
    assert sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*") if p.is_file()) == \
        ["sub/metrics.json", "summary.json"] and only.files == 2


def test_pull_exclude_through_the_cli_leaves_checkpoints_behind(cli, project, local_cluster):
    (project / "pyproject.toml").write_text("")
    (project / "w.py").write_text("import os\no = os.environ['AWSRUN_OUTPUT_DIR']\nos.makedirs(o + '/checkpoints')\n"
                                  "open(o + '/checkpoints/c.pt', 'w').write('c')\n"
                                  "open(o + '/s.json', 'w').write('{}')\n")
    assert cli("submit", "--pull-on-exit", "w.py").exit_code == 0
    subprocess.run(["rm", "-r", str(project / "runs")], check=True)
    result = cli("pull", "--exclude", "checkpoints/")
    assert result.exit_code == 0, result
    assert (project / "runs" / "work" / "s.json").exists() and not (project / "runs" / "work" / "checkpoints").exists()


# --- the project's place on the instance ------------------------------------------------------------------

def test_two_projects_of_the_same_name_never_share_a_directory_on_the_instance(cli, tmp_path, job_cluster):
    first, second = tmp_path / "one" / "proj", tmp_path / "two" / "proj"
    for root, word in ((first, "first"), (second, "second")):
        tree(root, {"pyproject.toml": "", "only_" + word + ".py": "print('" + word + "')\n"})
    assert cli("submit", "--follow", "--name", "a", "only_first.py", cwd=first).exit_code == 0
    assert cli("submit", "--follow", "--name", "b", "only_second.py", cwd=second).exit_code == 0
    one, two = job_cluster.project(first), job_cluster.project(second)
    assert one != two and one.name.startswith("proj-") and two.name.startswith("proj-")
    assert (one / "only_first.py").exists() and not (one / "only_second.py").exists()
    assert (two / "only_second.py").exists() and not (two / "only_first.py").exists()
    listed = cli("jobs", cwd=first)
    rows = {line.split("\t")[0]: line.split("\t")[-1] for line in listed.stdout.splitlines()[2:]}
    assert rows == {"a": f"{one.name} ({first})", "b": f"{two.name} ({second})"}, listed


def test_the_remote_directory_is_the_name_and_a_hash_of_the_absolute_path(tmp_path):
    a = project_remote_dir("~/awsrun", tmp_path / "x" / "proj")
    b = project_remote_dir("~/awsrun/", tmp_path / "y" / "proj")
    assert a.startswith("~/awsrun/proj-") and b.startswith("~/awsrun/proj-") and a != b
    assert a == project_remote_dir("~/awsrun", tmp_path / "x" / "." / "proj")


# --- what the user sees ---------------------------------------------------------------------------------

def test_rsync_progress_reaches_the_caller_and_shows_as_plain_lines_when_not_a_terminal(tmp_path, capsys):
    from awsrun import ui

    source = tree(tmp_path / "src", {"weights.bin": os.urandom(3 * MB)})
    seen = []
    rsync_pull.pull(LocalRemote(), str(source), tmp_path / "dest", on_progress=lambda *report: seen.append(report))
    assert seen and seen[-1][0] == 3 * MB and seen[-1][1] == 100  # bytes, percent (then rate and ETA)

    progress = ui.TransferProgress("pulling")
    progress(1000, 1, "1.00MB/s", "0:00:09")       # the first second: nothing
    progress.started -= 2
    progress(2_500_000, 50, "2.50MB/s", "0:00:01")
    progress(5_000_000, 100, "2.50MB/s", "0:00:00")
    progress.close()
    assert capsys.readouterr().err.splitlines() == ["  pulling: 2.5 MB (50%), 2.50MB/s, ETA 0:00:01",
                                                    "  pulling: 5.0 MB (100%), 2.50MB/s, ETA 0:00:00"]


def test_a_large_pull_says_how_much_it_is_about_to_fetch(tmp_path, capsys):
    from awsrun.cli.jobs import LARGE_PULL, say_plan

    entries, _ = rsync_pull.parse_listing([f"-rw-r--r-- {LARGE_PULL:,} 2026/12/04 16:00:00 ckpt.pt",
                                         "-rw-r--r--          5 2026/12/04 16:00:00 small.json"])
    say_plan(rsync_pull.pull_plan(entries, tmp_path, []))
    say_plan(rsync_pull.pull_plan(entries[1:], tmp_path, []))
    assert capsys.readouterr().err.splitlines() == [
        "fetching up to 100.0 MB (2 files new or changed; leave some behind with --exclude PATTERN)"]


def test_an_interrupted_pull_leaves_no_file_under_a_final_name_and_the_next_one_completes(tmp_path):
    """Ctrl-C while a big file is on its way: rsync parks it in the partial directory, nothing partial sits
    under the file's own name or a temporary one, and the next pull finishes it."""
    import signal
    import threading
    import time

    source = tree(tmp_path / "src", {"a.txt": "a", "big.bin": os.urandom(256 * MB)})
    dest = tmp_path / "dest"

    def ctrl_c_once_big_bin_is_on_its_way():
        while _temp_size(dest, ".big.bin.") <= MB:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=ctrl_c_once_big_bin_is_on_its_way, daemon=True)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        rsync_pull.pull(LocalRemote(), str(source), dest)
        watcher.join()  # the Ctrl-C lands while this waits, if the pull was faster than the watcher
    big = dest / "big.bin"
    assert not big.exists()
    assert not [p for p in dest.rglob("*") if p.name.startswith(".big.bin.")]  # no rsync temp left behind
    assert 0 < (dest / rsync.PARTIAL_DIR / "big.bin").stat().st_size < 256 * MB
    rsync_pull.pull(LocalRemote(), str(source), dest)
    assert big.read_bytes() == (source / "big.bin").read_bytes() and (dest / "a.txt").read_text() == "a"
    assert not (dest / rsync.PARTIAL_DIR).exists()


def _temp_size(directory: Path, prefix: str) -> int:
    """The size of rsync's temporary file named `prefix...` in `directory` (0 while there is none)."""
    try:
        return max((p.stat().st_size for p in directory.iterdir() if p.name.startswith(prefix)), default=0)
    except OSError:
        return 0
