"""Moving big results and many files: awsrun (awsrun.transfer.rsync: rsync over its kept OpenSSH master) beside
`rsync -a` over the SAME master connection, on one loopback sshd host of the test harness, in the same
run (cases interleaved, medians of N):

    push        1 GiB of random bytes + 2,000 small files into an empty directory on the host
    pull        the same back into an empty local directory
    peak RSS    of awsrun's process, of what it runs here (rsync, ssh), and of the rsync it runs on the
                host (VmHWM of the host's rsync processes, polled)
    resubmit    one changed file of 200, the connection open: submission.submit (sync + start in tmux) against
                `rsync -az` + `ssh tmux new` over the same master
    unchanged   the same with nothing changed: against `ssh tmux new` alone, and `rsync -az` + `ssh tmux new`
    first submit  10,000 files / 1 GB into an empty directory: submission.submit in a fresh process, and
                `awsrun submit` as typed (the CLI), against `rsync -a` + `ssh tmux new` over the same master;
                each run starts after a `sync`, so no case pays the write-back of another's gigabyte
    delta       bytes on the wire to push, and to pull, a 500 MB file after 1 MB was appended to it
    --fallback  also awsrun's transfer where rsync is missing (SFTP, awsrun.transfer.sftp_push/sftp_pull), push
                and pull beside `rsync -a` over the same master, with the peak RSS of awsrun, of the ssh
                it runs, and of the host's sshd serving the SFTP session

awsrun's push, pull and first submit run in a fresh process each time (python, imports, settings: what a
command pays). Each ratio is printed with its spread: the min-max of run i against the baseline's run i.
Sizes are flags, for a quick run (`--big-mib 64 --delta-mb 50 --many-files 1000 --many-mb 100`). Needs
root (the harness sshd).

    python bench/transfer.py [--runs 3] [--big-mib 1024] [--small-files 2000] [--delta-mb 500]
                             [--many-files 10000] [--many-mb 1000] [--fallback]
                             [--only push-pull|resubmit|first-submit|delta ...]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loopback_host import (  # noqa: E402
    Case,
    interleaved_samples,
    loopback,
    make_project,
    print_spread,
    run,
)

MiB = 1 << 20
SECTIONS = ("push-pull", "resubmit", "first-submit", "delta")


def open_host(project: Path):
    from awsrun.home import Home
    from awsrun.job import jobs
    from awsrun.settings import load_settings

    return jobs.open_host(Home.from_env(), load_settings(project, {}))


def child(verb: str, project: Path, remote: str, local: str) -> None:
    """One push or pull as a command does it, in this fresh process; prints its report and peak RSS."""
    from awsrun.transfer import rsync, scan, sftp_pull, sftp_push
    from awsrun.transfer import rsync_pull as transfer_pull

    with open_host(project) as host:
        if verb == "sftp-push":
            report = sftp_push.push(host.remote, scan.scan(project), remote).as_dict()
        elif verb == "sftp-pull":
            report = sftp_pull.pull(host.remote, remote, Path(local)).as_dict()
        elif verb == "push":
            report = rsync.push(host.remote, scan.scan(project), remote).as_dict()
        elif verb == "submit":  # `remote`: the session's name
            from awsrun.job import submission

            report = submission.submit(host, submission.SubmitRequest(project, "jobs/quick.py", (), remote)).sync.as_dict()
        else:
            report = transfer_pull.pull(host.remote, remote, Path(local)).as_dict()
    report["rss_self_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report["rss_children_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(report))


class PeakRss:
    """The peak VmHWM of the processes `pids()` names, polled every 50 ms while the block runs."""

    def __init__(self, pids: Callable[[], Iterable[int]]):
        self.pids, self.peak_kb, self._stop = pids, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self.pids():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except OSError:
                    continue


def host_rsync_rss(marker: str) -> PeakRss:
    """The host's rsync processes whose command line names `marker`."""
    def pids() -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"rsync\0--server") and marker.encode() in cmdline:
                found.append(int(pid))
        return found
    return PeakRss(pids)


def sshd_session_rss(listener: int) -> PeakRss:
    """The processes below the host's sshd listener (the session serving SFTP)."""
    def pids() -> set[int]:
        parents = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
        below = {listener}
        for _ in range(6):
            below |= {pid for pid, parent in parents.items() if parent in below}
        return below - {listener}
    return PeakRss(pids)


def run_child(verb: str, project: Path, remote: str, local: str, env: dict, cwd, poller: PeakRss,
              rss: dict[str, list[int]], name: str, children: str, on_host: str) -> None:
    """One `--child VERB` in a fresh process, its peak RSS and that of what it runs (here and, by `poller`,
    on the host) added to `rss` under `name`."""
    with poller:
        out = subprocess.run([sys.executable, str(HERE / "transfer.py"), "--child", verb, str(project), remote, local],
                             env=env, capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed: {out.stderr[-2000:]}")
    report = json.loads(out.stdout.splitlines()[-1])
    for label, kb in ((f"{name}: awsrun process", report["rss_self_kb"]), (f"{name}: {children}", report["rss_children_kb"]),
                      (f"{name}: {on_host}", poller.peak_kb)):
        rss.setdefault(label, []).append(kb)


def empty(*paths: Path) -> Callable[[int], None]:
    """A case's `before` for run i: its destinations (each path formatted with i) do not exist, and the disk
    has nothing left to write back (`sync`), so no case pays for another's gigabyte. A previous run's job
    may still be writing its log in one: removed again until it is gone."""
    def before(i: int) -> None:
        targets = [Path(str(path).format(i=i)) for path in paths]
        for _ in range(20):
            subprocess.run(["rm", "-rf", *map(str, targets)], capture_output=True)
            if not any(target.exists() for target in targets):
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"could not remove {targets}")
        subprocess.run(["sync"])
    return before


def print_rss(rss: dict[str, list[int]], runs: int, case: str = "") -> None:
    print(f"\npeak RSS{' ' + case if case else ''}, max of {runs} runs (MB)")
    for label, values in rss.items():
        print(f"{label:58} {max(values) / 1024:10.1f}")


@dataclass
class Bench:
    scratch: Path
    shell: object          # awsrun.transfer.rsync.Shell: ssh argv over the kept master, destination, cwd
    ssh: list[str]         # rsync's -e over that master
    dest: str
    home: Path             # the host user's home, as this machine sees it
    env: dict[str, str]
    runs: int

    def keep_tmux_server(self) -> None:
        """A session that outlives the bench's quick jobs: without it the by-hand tmux server exits with its last
        job, and a `tmux new` that meets it exiting fails ("server exited unexpectedly")."""
        run([*self.shell.ssh, self.dest, "tmux -L manual has-session -t keep 2>/dev/null || "
             "tmux -L manual new -d -s keep 'sleep 86400'"], cwd=self.shell.cwd)

    def tmux_new(self, directory: str, session: str) -> None:
        start = f"cd ~/{directory} && python3 jobs/quick.py > out.log 2>&1"
        run([*self.shell.ssh, self.dest, shlex.join(["tmux", "-L", "manual", "new", "-d", "-s", session, start])],
            cwd=self.shell.cwd)


def resubmit_rows(bench: Bench) -> None:
    """submission.submit over the open connection against rsync -az + ssh tmux new: one file changed, then none."""
    from awsrun.job import submission

    small = make_project(bench.scratch / "small", 200, 5_000_000)
    bench.keep_tmux_server()
    edited = small / "pkg3" / "mod3.py"
    host = open_host(small)

    def edit(i: int) -> None:
        edited.write_text(edited.read_text() + f"# edit {i}\n")

    def submit(prefix: str):
        return lambda i: submission.submit(host, submission.SubmitRequest(small, "jobs/quick.py", (), f"{prefix}{i}"))

    def rsync_and_tmux(prefix: str):
        def action(i: int) -> None:
            run(["rsync", "-az", "--delete", *bench.ssh, f"{small}/", f"{bench.dest}:by-hand/"], cwd=bench.shell.cwd)
            bench.tmux_new("by-hand", f"{prefix}{i}")
        return action

    cases = [Case("rsync -az + ssh tmux new, same master", rsync_and_tmux("h"), edit),
             Case("awsrun submission.submit, connection open", submit("b"), edit)]
    for case in cases:
        case.action(-1)
    runs = max(bench.runs, 7)
    samples = interleaved_samples(cases, runs)
    print_spread(f"resubmit, one changed file of 200 (5 MB), connection open, median of {runs}", samples,
                 cases[0].label)
    unchanged = [Case("ssh tmux new alone, same master", lambda i: bench.tmux_new("by-hand", f"t{i}")),
                 Case("rsync -az + ssh tmux new, nothing changed", rsync_and_tmux("n")),
                 Case("awsrun submission.submit, nothing changed", submit("u"))]
    samples = interleaved_samples(unchanged, runs)
    print_spread(f"resubmit, nothing changed (200 files), connection open, median of {runs}", samples,
                 unchanged[0].label)
    print_spread("the same against rsync + tmux", {label: samples[label] for label in list(samples)[1:]},
                 unchanged[1].label)
    host.close()


def first_submit_rows(bench: Bench, files: int, megabytes: int, rss: dict[str, list[int]]) -> None:
    """A first submit of FILES files / MEGABYTES MB (random bytes, a few directories deep) into an empty
    directory: `awsrun submit` in a fresh process against rsync -a + ssh tmux new over the same master."""
    from awsrun.job.projects import project_remote_dir

    project = bench.scratch / "many"
    bench.keep_tmux_server()
    (project / "jobs").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'many'\n")
    (project / "jobs" / "quick.py").write_text("print('hello from the job')\n")
    each = megabytes * 1_000_000 // files
    for index in range(files):
        path = project / f"d{index % 20}" / f"e{index % 7}" / f"f{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(each))
    remote_root = project_remote_dir("~/awsrun", project)
    on_host = bench.home / remote_root[2:]

    clean = empty(on_host, bench.home / "many-by-hand", Path(bench.env["AWSRUN_HOME"]) / "manifests")

    def by_hand(i: int) -> None:
        run(["rsync", "-a", *bench.ssh, f"{project}/", f"{bench.dest}:many-by-hand/"], cwd=bench.shell.cwd)
        bench.tmux_new("many-by-hand", f"m{i}")

    def awsrun(i: int) -> None:
        with host_rsync_rss(on_host.name) as target:
            out = subprocess.run([sys.executable, str(HERE / "transfer.py"), "--child", "submit", str(project),
                                  f"first{i}", "-"], env=bench.env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"awsrun submit failed: {out.stderr[-2000:]}")
        report = json.loads(out.stdout.splitlines()[-1])
        assert report["files_sent"] >= files, report
        rss.setdefault("awsrun first submit: awsrun process", []).append(report["rss_self_kb"])
        rss.setdefault("awsrun first submit: rsync+ssh it runs here", []).append(report["rss_children_kb"])
        rss.setdefault("awsrun first submit: rsync on the host", []).append(target.peak_kb)

    def command(i: int) -> None:
        run([sys.executable, "-m", "awsrun", "submit", "--name", f"cli{i}", "jobs/quick.py"], cwd=project,
            env=bench.env)

    samples = interleaved_samples([Case("rsync -a + ssh tmux new, same master", by_hand, clean),
                                   Case("awsrun submit (fresh process)", awsrun, clean),
                                   Case("`awsrun submit` as typed (the CLI)", command, clean)], bench.runs)
    print_spread(f"first submit, {files:,} files / {megabytes:,} MB, into an empty directory, median of "
                 f"{bench.runs}", samples, next(iter(samples)))
    clean(0)
    run(["rm", "-rf", str(project)])


def fallback_rows(args, bench: Bench, project: Path, listener: int, what: str) -> None:
    """--fallback: the SFTP transfer awsrun uses where rsync is missing, beside `rsync -a` over the same
    master, cases interleaved; awsrun's push and pull in a fresh process each. Pulls read ~/r-src."""
    scratch, home, ssh, dest, shell = bench.scratch, bench.home, bench.ssh, bench.dest, bench.shell
    rss: dict[str, list[int]] = {}

    def sftp(verb: str, remote: str, local: str = "-") -> None:
        run_child(f"sftp-{verb}", project, remote, local, bench.env, shell.cwd, sshd_session_rss(listener), rss,
                  f"SFTP {verb}", "ssh it runs here", "sshd serving it on the host")

    push_rows = interleaved_samples([
        Case("rsync -a, same master: push", lambda i: run(["rsync", "-a", *ssh, f"{project}/", f"{dest}:fr-{i}/"],
                                                           cwd=shell.cwd), empty(home / "fr-{i}")),
        Case("awsrun SFTP fallback push (fresh process)", lambda i: sftp("push", f"~/fa-{i}"), empty(home / "fa-{i}")),
    ], args.runs)
    print_spread(f"without rsync: push {what}, median of {args.runs}", push_rows, next(iter(push_rows)))
    pull_rows = interleaved_samples([
        Case("rsync -a, same master: pull", lambda i: run(["rsync", "-a", *ssh, f"{dest}:r-src/",
                                                           str(scratch / f"fpr-{i}") + "/"], cwd=shell.cwd),
             empty(scratch / "fpr-{i}")),
        Case("awsrun SFTP fallback pull (fresh process)", lambda i: sftp("pull", "~/r-src", str(scratch / f"fpa-{i}")),
             empty(scratch / "fpa-{i}")),
    ], args.runs)
    print_spread(f"without rsync: pull {what}, median of {args.runs}", pull_rows, next(iter(pull_rows)))
    assert (scratch / f"fpa-{args.runs - 1}" / "weights.bin").stat().st_size == args.big_mib * MiB
    print_rss(rss, args.runs, "without rsync")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--delta-mb", type=int, default=500)
    parser.add_argument("--many-files", type=int, default=10_000, help="first submit: this many files")
    parser.add_argument("--many-mb", type=int, default=1000, help="first submit: of this many MB in all")
    parser.add_argument("--fallback", action="store_true", help="also the SFTP fallback beside rsync -a")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable); all of them by default")
    parser.add_argument("--child", nargs=4, metavar=("VERB", "PROJECT", "REMOTE", "LOCAL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]), args.child[2], args.child[3])
    sections = set(args.only or SECTIONS)

    from awsrun.transfer import rsync

    with loopback() as box, tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as scratch:
        scratch = Path(scratch)
        env = box.env()
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWSRUN_")})
        project = make_project(scratch / "project", args.small_files, 20_000_000)
        with open_host(project) as first:  # first contact (paramiko) pins the host key
            first.remote.run("true")
        host = open_host(project)           # from now on: the system ssh over awsrun's kept master
        host.remote.run("true")
        shell = rsync.shell_of(host.remote)  # the baseline rides the same master
        assert any(word.startswith("ControlPath=") for word in shell.ssh), shell.ssh
        bench = Bench(scratch, shell, ["-e", shlex.join(shell.ssh)], shell.destination, box.host.home, env, args.runs)
        rss: dict[str, list[int]] = {}
        if "push-pull" in sections:
            push_pull_rows(args, bench, project, box.host.process.pid, rss)
        if "resubmit" in sections:
            resubmit_rows(bench)
        if "first-submit" in sections:
            first_submit_rows(bench, args.many_files, args.many_mb, rss)
        if "delta" in sections:
            delta_rows(bench, args.delta_mb)
        host.close()
        if "first-submit" in sections:
            print_rss({label: values for label, values in rss.items() if "submit" in label}, args.runs)
        print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")


def push_pull_rows(args, bench: Bench, project: Path, listener: int, rss: dict[str, list[int]]) -> None:
    """PROJECT plus one big file of random bytes: awsrun push and pull (fresh processes) against rsync -a."""
    scratch, home, ssh, dest, shell, env = bench.scratch, bench.home, bench.ssh, bench.dest, bench.shell, bench.env
    with open(project / "weights.bin", "wb") as handle:
        for _ in range(args.big_mib):
            handle.write(os.urandom(MiB))

    def awsrun(verb: str, remote: str, local: str = "-") -> None:
        run_child(verb, project, remote, local, env, shell.cwd, host_rsync_rss(remote.strip("~/")), rss,
                  f"awsrun {verb}", "rsync+ssh it runs here", "rsync on the host")

    def rsync_push(i: int) -> None:
        run(["rsync", "-a", *ssh, f"{project}/", f"{dest}:r-{i}/"], cwd=shell.cwd)

    def rsync_pull(i: int) -> None:
        run(["rsync", "-a", *ssh, f"{dest}:r-src/", str(scratch / f"pr-{i}") + "/"], cwd=shell.cwd)

    run(["rsync", "-a", *ssh, f"{project}/", f"{dest}:r-src/"], cwd=shell.cwd)
    total = sum(p.stat().st_size for p in project.rglob("*") if p.is_file())
    what = f"{args.big_mib} MiB random + {args.small_files} small files ({total / 1e6:.0f} MB)"
    push_rows = interleaved_samples([
        Case("rsync -a, same master: push", rsync_push, empty(home / "r-{i}")),
        Case("awsrun push (fresh process)", lambda i: awsrun("push", f"~/a-{i}"), empty(home / "a-{i}")),
    ], args.runs)
    print_spread(f"push {what}, loopback sshd, median of {args.runs}", push_rows, next(iter(push_rows)))
    pull_rows = interleaved_samples([
        Case("rsync -a, same master: pull", rsync_pull, empty(scratch / "pr-{i}")),
        Case("awsrun pull (fresh process)", lambda i: awsrun("pull", "~/r-src", str(scratch / f"pa-{i}")),
             empty(scratch / "pa-{i}")),
    ], args.runs)
    print_spread(f"pull {what}, loopback sshd, median of {args.runs}", pull_rows, next(iter(pull_rows)))
    assert (scratch / f"pa-{args.runs - 1}" / "weights.bin").stat().st_size == args.big_mib * MiB
    print_rss(rss, args.runs)
    if args.fallback:
        fallback_rows(args, bench, project, listener, what)
    run(["rm", "-rf", str(home / "r-src"), str(project / "weights.bin"), *(str(p) for p in scratch.glob("p[ar]-*"))])


def delta_rows(bench: Bench, megabytes: int) -> None:
    """Bytes on the wire to push, and to pull, a MEGABYTES file after 1 MB was appended to it."""
    from awsrun.transfer import rsync, scan
    from awsrun.transfer import rsync_pull as transfer_pull

    delta = bench.scratch / "delta"
    delta.mkdir()
    (delta / "pyproject.toml").write_text("")
    big = delta / "metrics.bin"
    with open(big, "wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1_000_000))
    with open_host(delta) as dhost:
        rsync.push(dhost.remote, scan.scan(delta), "~/delta")
        pulled = bench.scratch / "delta-back"
        transfer_pull.pull(dhost.remote, "~/delta", pulled)
        with open(big, "ab") as handle:
            handle.write(os.urandom(1_000_000))
        pushed = rsync.push(dhost.remote, scan.scan(delta), "~/delta")
        transfer_pull.pull(dhost.remote, "~/delta", pulled)  # level again
        with open(bench.home / "delta" / "metrics.bin", "ab") as handle:
            handle.write(os.urandom(1_000_000))
        back = transfer_pull.pull(dhost.remote, "~/delta", pulled)
    print(f"\ndelta: {megabytes} MB file, 1 MB appended")
    print(f"{'push: bytes on the wire':58} {pushed.bytes_sent / 1e6:10.2f} MB")
    print(f"{'pull: bytes on the wire':58} {back.bytes_received / 1e6:10.2f} MB")

if __name__ == "__main__":
    main()
