"""The start lock on the target: one start of a job name at a time (awsrun.job.tmux.start_job), so two submits
of one name never both reset its directory.
"""
from __future__ import annotations

import shlex

EXIT_STARTING = 16       # another start of that name held the lock for START_LOCK_WAIT_S
START_LOCK_WAIT_S = 120
LOCK_FD = 9              # the descriptor the start holds the lock on (flock(1)'s way)

# Holds an exclusive lock on argv[1] while bash runs the start script argv[3]; waits up to argv[2] seconds
# for it, then exits EXIT_STARTING. The lock dies with this process, so a killed submit leaves none
# behind; its descriptor is not inherited, so the tmux server a start may spawn never holds it.
LOCK_PROGRAM = f"""
import fcntl, os, subprocess, sys, time
path = os.path.expanduser(sys.argv[1])
os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
    except BlockingIOError:
        if time.monotonic() > deadline:
            sys.exit({EXIT_STARTING})
        time.sleep(0.05)
sys.exit(subprocess.call(["bash", "-c", sys.argv[3]]))
"""


def under_lock(lock: str, directory: str, script: str, python: str) -> str:
    """A shell line running the shell `script` under the exclusive `lock` (quoted words, `lock` in
    `directory`), or exiting EXIT_STARTING after START_LOCK_WAIT_S. flock(1) where the target has it
    (util-linux, on every Linux image), on descriptor LOCK_FD of a subshell that then runs the script: no
    second shell to start, as a start runs inside the submit's round trip. What the script starts that
    outlives it (a tmux server) must not inherit LOCK_FD: the script closes it there (`LOCK_FD>&-`).
    LOCK_PROGRAM elsewhere (macOS, the local provider): a Python start costs a submit 20-40 ms."""
    wait = START_LOCK_WAIT_S
    return (f"awsrun_start={shlex.quote(script)}; if command -v flock >/dev/null 2>&1; then "
            f"[ -d {directory} ] || ( umask 077; mkdir -p {directory} ); "
            f"( flock -E {EXIT_STARTING} -w {wait} {LOCK_FD} || exit $?; eval \"$awsrun_start\" ) {LOCK_FD}>{lock}; "
            f"else {shlex.quote(python)} -c {shlex.quote(LOCK_PROGRAM)} {lock} {wait} \"$awsrun_start\"; fi")
