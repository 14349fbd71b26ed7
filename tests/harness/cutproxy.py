"""A ProxyCommand wrapper that counts the bytes of an SSH connection and can cut it: flaky Wi-Fi on demand.

    python cutproxy.py [--up N] [--down N] [--once FLAG] [--count FILE] [--stall 1] -- REAL PROXY COMMAND...

Runs the real ProxyCommand and forwards stdin/stdout through it. With --up N (client to server) or
--down N (server to client), the connection dies once more than N bytes went that way: the real proxy is
killed and this process exits at once, as a dropped link does. With --once FLAG, only the first
connection is cut (FLAG is created then; a later connection passes through), so a re-run can succeed.
With --stall 1, the connection is not cut but hangs there (a link that stops answering) until killed.
With --count DIR, DIR/PID holds this connection's totals as "UP DOWN", kept current (a kept-open master
connection never ends within a test).
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    up_limit = down_limit = None
    once = count = None
    stall = False
    args = argv[1:]
    while args and args[0] != "--":
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--up":
            up_limit = int(value)
        elif flag == "--down":
            down_limit = int(value)
        elif flag == "--once":
            once = value
        elif flag == "--count":
            count = value
        elif flag == "--stall":
            stall = value == "1"
        else:
            print(f"cutproxy: unknown option {flag}", file=sys.stderr)
            return 2
    command = args[1:]
    if once is not None and os.path.exists(once):
        up_limit = down_limit = None  # cut once already: this connection passes through
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    up = down = 0
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    child_out = child.stdout.fileno()
    sources = [stdin, child_out]

    def record() -> None:
        if count is not None:
            temp = os.path.join(count, f".{os.getpid()}")
            with open(temp, "w") as handle:
                handle.write(f"{up} {down}\n")
            os.replace(temp, os.path.join(count, str(os.getpid())))

    def cut() -> None:
        if once is not None:
            open(once, "w").close()
        record()
        while stall:
            signal.pause()
        os.kill(child.pid, signal.SIGKILL)
        os._exit(0)

    while sources:
        readable, _, _ = select.select(sources, [], [])
        if stdin in readable:
            data = os.read(stdin, 65536)
            if data:
                up += len(data)
                if up_limit is not None and up > up_limit:
                    cut()
                child.stdin.write(data)
                record()
            else:
                child.stdin.close()
                sources.remove(stdin)
        if child_out in readable:
            data = os.read(child_out, 65536)
            if not data:
                break
            down += len(data)
            if down_limit is not None and down > down_limit:
                cut()
            view = memoryview(data)
            while view:
                view = view[os.write(stdout, view):]
            record()
    record()
    child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
