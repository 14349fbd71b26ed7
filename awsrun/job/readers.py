"""Programs the target runs to read job directories (see awsrun.job.tmux for their layout): every job's
state in one round trip (list_jobs) and one job's log, followed until it ends (follow_log)."""

from __future__ import annotations

import shlex

from awsrun.job.tmux import JOBS_ROOT, SOCKET, job_dir, remote_path, tmux, validate_session_name

STATUS_MARK = "AWSRUN-STATUS "  # follow_log's last line: the job's state as JSON

LIST_PROGRAM = r"""
import json, os, sys, time
root = os.path.expanduser(sys.argv[1])
alive = [s for s in sys.stdin.read().split("\n") if s]
def read(d, name):
    try:
        with open(os.path.join(d, name), "rb") as handle:
            return handle.read()
    except OSError:
        return None
def number(d, name, kind=float):
    # the job's own process can write these files: a value that does not parse is none (a time that is
    # nan, inf or 1e300 parses: awsrun.job.jobs.job_status takes it as none)
    raw = read(d, name)
    try:
        return kind(raw) if raw is not None else None
    except ValueError:
        return None
jobs, seen = [], set()
names = sorted(os.listdir(root)) if os.path.isdir(root) else []
for name in names:
    d = os.path.join(root, name)
    if not os.path.isdir(d):
        continue
    seen.add(name)
    argv = read(d, "argv")
    jobs.append({
        "name": name, "alive": name in alive,
        "argv": [a.decode("utf-8", "replace") for a in argv.split(b"\0")[:-1]] if argv else [],
        "started_at": number(d, "started_at"), "ended_at": number(d, "ended_at"),
        "exit_code": number(d, "exit_code", int), "killed_at": number(d, "killed_at"),
    })
for name in alive:
    if name not in seen:
        jobs.append({"name": name, "alive": True, "argv": [], "started_at": None, "ended_at": None,
                     "exit_code": None, "killed_at": None})
print(json.dumps({"now": time.time(), "jobs": jobs}))
"""


def list_jobs(python: str, jobs_root: str = JOBS_ROOT, socket: str = SOCKET) -> str:
    """One shell line printing every job's state as JSON (LIST_PROGRAM): one round trip for all jobs."""
    sessions = shlex.join(tmux("list-sessions", "-F", "#{session_name}", socket=socket))
    return (f"{{ {sessions} 2>/dev/null || true; }} | "
            f"{shlex.quote(python)} -c {shlex.quote(LIST_PROGRAM)} {remote_path(jobs_root)}")


FOLLOW_PROGRAM = r"""
import json, os, select, subprocess, sys, time
d, name, lines, follow = os.path.expanduser(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
socket = sys.argv[5]
log, out = os.path.join(d, "log"), sys.stdout.buffer
def done():
    for marker in ("exit_code", "killed_at"):
        if os.path.exists(os.path.join(d, marker)):
            return True
    return False
def alive():
    return subprocess.call(["tmux", "-L", socket, "has-session", "-t", "=" + name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
def start_offset():
    try:
        size = os.path.getsize(log)
    except OSError:
        return 0
    if lines < 0:
        return 0
    if lines == 0:
        return size
    with open(log, "rb") as handle:
        position, found = size, 0
        while position > 0:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            block = handle.read(step)
            if position + step == size and block.endswith(b"\n"):
                block = block[:-1]
            index = len(block)
            while True:
                index = block.rfind(b"\n", 0, index)
                if index < 0:
                    break
                found += 1
                if found >= lines:
                    return position + index + 1
        return 0
def status():
    def read(marker):
        try:
            with open(os.path.join(d, marker), "rb") as handle:
                return handle.read()
        except OSError:
            return None
    try:
        code = int(read("exit_code"))
    except (TypeError, ValueError):  # none yet, or not a whole number (the job's own process can write it)
        code = None
    return {"exit_code": code, "killed": read("killed_at") is not None, "running": False}
def finish(result, last):
    out.write((b"" if last in (b"", b"\n") else b"\n") + b"AWSRUN-STATUS " + json.dumps(result).encode() + b"\n")
    out.flush()
    sys.exit(0)
if not os.path.isdir(d):
    finish({"missing": True}, b"")
position, checked, listener, last = start_offset(), 0.0, select.poll(), b""
listener.register(1, 0)
while True:
    finished = done()
    try:
        with open(log, "rb") as handle:
            handle.seek(position)
            chunk = handle.read()
    except OSError:
        chunk = b""
    if chunk:
        out.write(chunk)
        out.flush()
        position, last = position + len(chunk), chunk[-1:]
    if finished or not follow:
        break
    now = time.monotonic()
    if now - checked > 0.5:
        checked = now
        if not alive() and not done():
            time.sleep(0.3)
            if not done():
                break
    if listener.poll(0):
        sys.exit(0)
    time.sleep(0.1)
result = status()
if not done():
    result["running"] = alive()
finish(result, last)
"""


def follow_log(name: str, python: str, *, lines: int | None = None, follow: bool = False,
               jobs_root: str = JOBS_ROOT, socket: str = SOCKET) -> str:
    """Print the last `lines` lines of the job's log (all when None) and, with `follow`, go on until the
    job ends; the job's state comes last, on a line of its own starting with STATUS_MARK. It exits
    when nobody listens any more."""
    validate_session_name(name)
    return (f"{shlex.quote(python)} -c {shlex.quote(FOLLOW_PROGRAM)} {remote_path(job_dir(name, jobs_root))} "
            + shlex.join([name, str(-1 if lines is None else lines), "1" if follow else "0", socket]))
