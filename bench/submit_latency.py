"""How long does `awsrun submit` take, against doing it by hand? On one loopback sshd host of the test
harness, in the same run, medians of N:

    manual      scp -r PROJECT host:   then   ssh host tmux new -d -s NAME 'cd PROJECT && python3 ...'
    awsrun      awsrun submit --name NAME quick.py   (a fresh project copy on the host each time)
    unchanged   awsrun submit again with nothing changed
    one file    awsrun submit after changing one file
    by hand     rsync -az (one file changed) + ssh host tmux new ...: the incremental recipe

The project: 200 files, 5 MB (nine in ten Python-like text, one in ten random bytes). Every command is a
new process with its own fresh SSH connection(s), as a user types them. Needs root (the harness sshd).

    python bench/submit_latency.py [--runs 7] [--files 200] [--megabytes 5]
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import tempfile
from pathlib import Path

from loopback_host import Case, interleaved_medians, loopback, make_project, print_table, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--megabytes", type=float, default=5)
    args = parser.parse_args()
    with loopback() as box, tempfile.TemporaryDirectory() as scratch:
        project = make_project(Path(scratch) / "project", args.files, int(args.megabytes * 1_000_000))
        env = box.env()
        remote_copy = box.host.home / "awsrun" / "project"

        def manual(i: int) -> None:
            run(["scp", "-q", "-r", *box.ssh_options(), "-P", str(box.host.port), str(project),
                 f"{box.target}:manual-{i}"])
            start = f"cd ~/manual-{i} && python3 jobs/quick.py > out.log 2>&1"
            run(box.ssh("tmux", "-L", "manual", "new", "-d", "-s", f"w{i}", shlex.quote(start)))

        def manual_rsync(i: int) -> None:
            run(["rsync", "-az", "--delete", "-e", box.ssh_command_string(), f"{project}/", f"{box.target}:by-hand/"])
            start = "cd ~/by-hand && python3 jobs/quick.py > out.log 2>&1"
            run(box.ssh("tmux", "-L", "manual", "new", "-d", "-s", f"r{i}", shlex.quote(start)))

        def submit(i: int) -> None:
            run(box.awsrun("submit", "--name", f"b{i}", "quick.py"), cwd=project, env=env)

        def fresh_copy(i: int) -> None:
            run(["rm", "-rf", str(remote_copy)])

        def touch_one(i: int) -> None:
            path = project / "pkg3" / "mod3.py"
            path.write_text(path.read_text() + f"# edit {i}\n")

        run(box.ssh("true"))  # pin the host key for the manual commands
        submit(99)             # and for awsrun; warm caches on both sides
        manual_rsync(99)
        rows = interleaved_medians([
            Case(f"manual: scp -r ({args.files} files, {args.megabytes:g} MB) + ssh tmux new", manual),
            Case("awsrun submit (nothing on the host yet)", submit, fresh_copy),
            Case("awsrun submit, unchanged project", lambda i: submit(100 + i)),
            Case("awsrun submit, one file changed", lambda i: submit(200 + i), touch_one),
            Case("by hand: rsync -az (one file changed) + ssh tmux new", manual_rsync, touch_one),
        ], args.runs)
        subprocess.run(box.ssh("tmux", "-L", "manual", "kill-server"), capture_output=True)
        print_table(f"submit latency on a loopback sshd host (median of {args.runs})", rows, rows[0][0])


if __name__ == "__main__":
    main()
