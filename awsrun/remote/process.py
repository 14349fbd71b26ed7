"""Running a local process whose output matters as it comes: ssh for awsrun's remote commands, rsync."""
from __future__ import annotations

import re
import subprocess
import threading

from awsrun.remote.base import LineSink


def stream_output(process: subprocess.Popen, stdin: bytes | None, on_line: LineSink,
                  timeout: float | None = None, separator: bytes = rb"\n") -> tuple[int, bytes, bytes]:
    """stdout line by line to `on_line` as it comes (lines end at `separator`, a regex); stdin fed and stderr
    drained by helper threads. Returns (exit code, all stdout, all stderr)."""
    errors: list[bytes] = []

    def feed() -> None:
        try:
            if stdin:
                process.stdin.write(stdin)
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass

    helpers = [threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)]
    if process.stdin is not None:
        helpers.append(threading.Thread(target=feed, daemon=True))
    for helper in helpers:
        helper.start()
    timer = threading.Timer(timeout, process.kill) if timeout else None
    if timer:
        timer.start()
    out, pending = bytearray(), bytearray()
    try:
        while True:
            chunk = process.stdout.read1(65536)
            if not chunk:
                break
            out += chunk
            pending += chunk
            *lines, rest = re.split(separator, bytes(pending))
            for line in lines:
                on_line(line.decode(errors="replace"))
            pending = bytearray(rest)
        if pending:
            on_line(pending.decode(errors="replace"))
        code = process.wait()
    finally:
        if timer:
            timer.cancel()
    for helper in helpers:
        helper.join(timeout=5)
    return code, bytes(out), b"".join(errors)


def stop_process(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM (a chance to clean up: rsync parks its partial file, ssh closes a tunnel), then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
