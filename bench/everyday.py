"""The everyday commands against their manual baselines, in the same run (cases interleaved, medians of N),
on one loopback sshd host of the test harness. One table per goal of issue 9:

    start       awsrun --help / --version / status --cached    vs  python -c 'import click'
    resubmit    awsrun submit, one file of 200 changed          vs  rsync -az + ssh tmux new, by hand,
                (master kept open; and with no master: one          with fresh connections and over an
                handshake)                                          open ControlMaster; scp -r + ssh
    jobs        awsrun jobs / logs (master kept open)           vs  ssh host tmux ls over a ControlMaster
    up          awsrun up on the ready host (--no-bootstrap)    vs  one ssh round trip, fresh

Every awsrun command is a new process, as a user types it. Needs root (the harness sshd).

    python bench/everyday.py [--runs 9] [--files 200] [--megabytes 5]
"""
from __future__ import annotations

import argparse
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
    run,
)


def table(title: str, rows: list[tuple[str, float]], baseline: str, goals: dict[str, str] | None = None) -> None:
    base = dict(rows)[baseline]
    print(f"\n{title}\n")
    print(f"| what | median ms | x {baseline} | goal |")
    print("|---|---:|---:|---|")
    for label, ms in rows:
        print(f"| {label} | {ms:.0f} | {ms / base:.2f} | {(goals or {}).get(label, '')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--megabytes", type=float, default=5)
    args = parser.parse_args()

    from awsrun.remote.openssh import close_masters

    with loopback("127.0.0.11") as box, tempfile.TemporaryDirectory() as scratch:
        project = make_project(Path(scratch) / "project", args.files, int(args.megabytes * 1_000_000))
        env = box.env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules load from their bytecode cache
        sockets = box.awsrun_home / "sockets"
        control = Path(scratch) / "cm.sock"
        master = ["-o", f"ControlPath={control}"]
        edited = project / "pkg3" / "mod3.py"

        def awsrun(*words: str):
            return lambda i: run(box.awsrun(*words), cwd=project, env=env)

        def edit(i: int) -> None:
            edited.write_text(edited.read_text() + f"# edit {i}\n")

        def no_master(i: int) -> None:
            close_masters(sockets, None)

        def edit_no_master(i: int) -> None:
            edit(i)
            no_master(i)

        # pin the host key (paramiko's first contact), open awsrun's master, fill every target once
        run(box.ssh("true"))
        run(["ssh", *box.ssh_options(), *master, "-o", "ControlMaster=yes", "-o", "ControlPersist=900", "-N", "-f",
             "-p", str(box.host.port), box.target])
        awsrun("submit", "--name", "warm0", "quick.py")(0)
        awsrun("submit", "--name", "warm1", "quick.py")(0)
        box.rsync_and_tmux(project, "fresh", "f")(-1)
        box.rsync_and_tmux(project, "cm", "c", *master)(-1)

        start_rows = interleaved_medians([
            Case("python -c 'import click'", lambda i: run([sys.executable, "-c", "import click"], env=env)),
            Case("awsrun --help", awsrun("--help")),
            Case("awsrun --version", awsrun("--version")),
            Case("awsrun status --cached", awsrun("status", "--cached")),
        ], args.runs)
        table(f"CLI start (median of {args.runs})", start_rows, "python -c 'import click'",
              {"awsrun --help": "<= 1.5x", "awsrun --version": "<= 1.5x", "awsrun status --cached": "<= 2x"})

        resubmit_rows = interleaved_medians([
            Case("by hand: rsync -az + ssh tmux new, fresh connections", box.rsync_and_tmux(project, "fresh", "f"), edit),
            Case("by hand: rsync -az + ssh tmux new, ControlMaster open", box.rsync_and_tmux(project, "cm", "c", *master), edit),
            Case("awsrun submit, connection kept open", lambda i: awsrun("submit", "--name", f"k{i}", "quick.py")(i),
                 edit),
            Case("awsrun submit, no connection open (one handshake)",
                 lambda i: awsrun("submit", "--name", f"n{i}", "quick.py")(i), edit_no_master),
            Case(f"classic: scp -r ({args.files} files) + ssh tmux new", box.scp_and_tmux(project, "scp", "s")),
        ], args.runs)
        table(f"resubmit after changing one file of {args.files} ({args.megabytes:g} MB), median of {args.runs}",
              resubmit_rows, "by hand: rsync -az + ssh tmux new, fresh connections",
              {"awsrun submit, connection kept open": "<= 150 ms",
               "awsrun submit, no connection open (one handshake)": "<= 1.00"})

        read_rows = interleaved_medians([
            Case("by hand: ssh tmux ls, ControlMaster open",
                 lambda i: run(["ssh", *box.ssh_options(), *master, "-p", str(box.host.port), box.target,
                                "tmux -L awsrun ls || true"])),
            Case("by hand: ssh tmux ls, fresh connection", lambda i: run(box.ssh("tmux -L awsrun ls || true"))),
            Case("awsrun jobs, connection kept open", awsrun("jobs")),
            Case("awsrun logs k0, connection kept open", awsrun("logs", "k0")),
            Case("awsrun jobs, no connection open", awsrun("jobs"), no_master),
        ], args.runs)
        table(f"reading job state (median of {args.runs})", read_rows, "by hand: ssh tmux ls, ControlMaster open")

        host_spec = f"ubuntu@{box.host.address}:{box.host.port}"
        up_rows = interleaved_medians([
            Case("ssh host true, fresh connection", lambda i: run(box.ssh("true"))),
            Case("awsrun up (ready host, --no-bootstrap), connection kept open",
                 awsrun("up", "--host", host_spec, "--no-bootstrap")),
            Case("awsrun up (ready host, --no-bootstrap), no connection open",
                 awsrun("up", "--host", host_spec, "--no-bootstrap"), no_master),
        ], args.runs)
        table(f"up on a ready host (median of {args.runs})", up_rows, "ssh host true, fresh connection")

        subprocess.run(box.ssh("tmux", "-L", "manual", "kill-server"), capture_output=True)
        subprocess.run(["ssh", *master, "-O", "exit", box.target], capture_output=True)
        close_masters(sockets, None)


if __name__ == "__main__":
    main()
