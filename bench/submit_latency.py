"""How long does `awsrun submit` take, against doing it by hand? On one loopback sshd host of the test
harness, in the same run (cases interleaved), medians of N:

    manual      scp -r PROJECT host:   then   ssh host tmux new -d -s NAME 'cd PROJECT && python3 ...'
    awsrun      awsrun submit --name NAME quick.py   (a fresh project copy on the host each time)
    unchanged   awsrun submit again with nothing changed
    one file    awsrun submit after changing one file, over the connection awsrun keeps open
    by hand     rsync -az (one file changed) + ssh host tmux new ..., fresh connections
    by hand CM  the same over an open OpenSSH ControlMaster: the fastest manual recipe

and the goal of issue 9: a resubmit with one changed file <= 150 ms when a connection is already open.
The project: 200 files, 5 MB (nine in ten Python-like text, one in ten random bytes). awsrun runs as an
installed command would: a new process each time, modules from their bytecode cache. Needs root (the
harness sshd).

    python bench/submit_latency.py [--runs 7] [--files 200] [--megabytes 5]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from loopback_host import (
    Case,
    interleaved_medians,
    loopback,
    make_project,
    print_table,
    run,
)

GOAL_MS = 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--megabytes", type=float, default=5)
    args = parser.parse_args()
    with loopback() as box, tempfile.TemporaryDirectory() as scratch:
        project = make_project(Path(scratch) / "project", args.files, int(args.megabytes * 1_000_000))
        env = box.env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules load from their bytecode cache
        control = Path(scratch) / "cm.sock"
        master = ["-o", f"ControlPath={control}"]
        remote_copy = box.host.home / "awsrun" / "project"

        def submit(i: int) -> None:
            run(box.awsrun("submit", "--name", f"b{i}", "quick.py"), cwd=project, env=env)

        def fresh_copy(i: int) -> None:
            run(["rm", "-rf", str(remote_copy)])

        def touch_one(i: int) -> None:
            path = project / "pkg3" / "mod3.py"
            path.write_text(path.read_text() + f"# edit {i}\n")

        run(box.ssh("true"))  # pin the host key for the manual commands
        run(["ssh", *box.ssh_options(), *master, "-o", "ControlMaster=yes", "-o", "ControlPersist=900", "-N", "-f",
             "-p", str(box.host.port), box.target])
        submit(99)             # awsrun's first contact pins its key and opens the master it keeps
        box.rsync_and_tmux(project, "by-hand", "r")(99)
        box.rsync_and_tmux(project, "by-hand-cm", "c", *master)(99)
        one_file = "awsrun submit, one file changed (connection kept open)"
        over_master = "by hand: rsync -az + ssh tmux new, over a ControlMaster"
        rows = interleaved_medians([
            Case(f"manual: scp -r ({args.files} files, {args.megabytes:g} MB) + ssh tmux new", box.scp_and_tmux(project, "manual", "w")),
            Case("awsrun submit (nothing on the host yet)", submit, fresh_copy),
            Case("awsrun submit, unchanged project", lambda i: submit(100 + i)),
            Case(one_file, lambda i: submit(200 + i), touch_one),
            Case("by hand: rsync -az (one file changed) + ssh tmux new", box.rsync_and_tmux(project, "by-hand", "r"), touch_one),
            Case(over_master, box.rsync_and_tmux(project, "by-hand-cm", "c", *master), touch_one),
            Case("floor: python -c pass (this machine's interpreter start)",
                 lambda i: run([sys.executable, "-c", "pass"], env=env)),
        ], args.runs)
        subprocess.run(box.ssh("tmux", "-L", "manual", "kill-server"), capture_output=True)
        subprocess.run(["ssh", *master, "-O", "exit", box.target], capture_output=True)
        print_table(f"submit latency on a loopback sshd host (median of {args.runs})", rows, rows[0][0])
        measured = dict(rows)
        ms, manual_ms = measured[one_file], measured[over_master]
        print(f"\ngoal: a resubmit with one changed file on a ready host <= {GOAL_MS} ms with a connection open")
        print(f"  {one_file}: {ms:.0f} ms, {'met' if ms <= GOAL_MS else 'NOT met'} "
              f"({ms / GOAL_MS:.2f} x the goal, {ms / manual_ms:.2f} x {over_master}: {manual_ms:.0f} ms)")


if __name__ == "__main__":
    main()
