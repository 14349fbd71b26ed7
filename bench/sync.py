"""Resync after changing one file: awsrun's sync against `rsync -az --delete` over ssh, on one loopback
sshd host of the test harness, in the same run (cases interleaved), medians of N:

    rsync -az, fresh ssh            a new process and SSH connection, as typed by hand
    awsrun sync, fresh process      python + imports + SSH handshake + rsync with the project's filter
                                    rules (what a command pays; `awsrun submit` does this, then starts
                                    the job)
    rsync -az, ControlMaster        ssh multiplexed over an already open master connection
    awsrun sync, open connection    the same on a connection already open

Projects: 200 files / 5 MB and 2,000 files / 5 MB (nine in ten Python-like text). Needs root.

    python bench/sync.py [--runs 9]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loopback_host import (  # noqa: E402
    Case,
    interleaved_medians,
    loopback,
    make_project,
    print_table,
    run,
)


def child(project: Path, remote_root: str) -> None:
    """One sync as a command would do it, in this fresh process."""
    from awsrun.home import Home
    from awsrun.job import jobs
    from awsrun.settings import load_settings
    from awsrun.transfer import rsync as transfer
    from awsrun.transfer import scan

    tree = scan.scan(project)
    with jobs.open_host(Home.from_env(), load_settings(project)) as host:
        report = transfer.push(host.remote, tree, remote_root)
    print(json.dumps(report.as_dict()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--child", nargs=2, metavar=("PROJECT", "REMOTE_ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child[0]), args.child[1])

    from awsrun.home import Home
    from awsrun.job import jobs
    from awsrun.settings import load_settings
    from awsrun.transfer import rsync as transfer
    from awsrun.transfer import scan

    with loopback() as box, tempfile.TemporaryDirectory() as scratch:
        env = box.env()
        control = Path(scratch) / "cm.sock"
        master = ["-o", f"ControlPath={control}"]
        run(box.ssh("true"))
        run(["ssh", *box.ssh_options(), *master, "-o", "ControlMaster=yes", "-o", "ControlPersist=600", "-N", "-f",
             "-p", str(box.host.port), box.target])
        for files in (200, 2000):
            project = make_project(Path(scratch) / f"p{files}", files, 5_000_000)
            edited = project / "pkg3" / "mod3.py"
            home = box.host.home

            def edit(i: int) -> None:
                edited.write_text(edited.read_text() + f"# edit {i}\n")

            def rsync(target: str, *ssh_extra: str):
                def action(i: int) -> None:
                    run(["rsync", "-az", "--delete", "-e", " ".join([box.ssh_command_string(), *ssh_extra]),
                         f"{project}/", f"{box.target}:{target}/"])
                return action

            def awsrun_fresh(i: int) -> None:
                run([sys.executable, str(HERE / "sync.py"), "--child", str(project), f"~/a-fresh-{files}"], env=env)

            settings = load_settings(project, {})
            open_host = jobs.open_host(Home(box.awsrun_home), settings)

            def awsrun_open(i: int) -> None:
                transfer.push(open_host.remote, scan.scan(project), f"~/a-open-{files}")

            cases = [
                Case(f"rsync -az, fresh ssh ({files} files)", rsync(f"r-fresh-{files}"), edit),
                Case(f"awsrun sync, fresh process ({files} files)", awsrun_fresh, edit),
                Case(f"rsync -az, ControlMaster open ({files} files)", rsync(f"r-cm-{files}", *master), edit),
                Case(f"awsrun sync, connection open ({files} files)", awsrun_open, edit),
            ]
            for case in cases:  # the first, full copy of each target is not what is measured
                case.action(-1)
            rows = interleaved_medians(cases, args.runs)
            for case in cases:  # all four targets now catch up with the last edit, and must agree
                case.action(-1)
            open_host.close()
            for target in (f"r-fresh-{files}", f"a-fresh-{files}", f"r-cm-{files}", f"a-open-{files}"):
                assert (home / target / "pkg3" / "mod3.py").read_bytes() == edited.read_bytes(), target
            print_table(f"one changed file of {files} (5 MB), loopback sshd, median of {args.runs}", rows, rows[0][0])
        subprocess.run(["ssh", *master, "-O", "exit", box.target], capture_output=True)


if __name__ == "__main__":
    main()
