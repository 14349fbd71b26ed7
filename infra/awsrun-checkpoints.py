#!/usr/bin/env python3
"""Mirrors a job's checkpoint directory to S3 and back, on the instance, so that a spot interruption that
ends the instance loses at most the last interval. Runs with the job venv's python: stdlib + boto3 only.

    awsrun-checkpoints.py push [--region R] [--state FILE] LOCAL_DIR s3://bucket/prefix
    awsrun-checkpoints.py pull [--region R] [--state FILE] s3://bucket/prefix LOCAL_DIR
    awsrun-checkpoints.py follow [--region R] [--state FILE] [--every SECONDS] --pid-file F LOCAL_DIR s3://bucket/prefix

push uploads the files that are new or changed since the last push (size and mtime_ns per relative path,
kept in the state file, by default LOCAL_DIR/../.<dirname>.mirror.json) and deletes the objects whose
file is gone, but never when LOCAL_DIR is missing or empty: a fresh instance must not wipe the bucket.
Names ending in .tmp (or .tmp<pid>), .part, .partial and anything under a dot-directory are not mirrored (half-written).
pull downloads every object under the prefix that is missing locally (or differs in size) and records
it in the state file, so that the next push does not send it back. follow pushes every SECONDS while the
process in the pid file runs, and once more when it ends or this program gets SIGTERM/SIGINT.

Credentials come from boto3's default chain (on EC2, the instance profile through IMDS), the endpoint
from boto3's defaults (AWS_ENDPOINT_URL included). boto3 does not find the region on an instance by
itself: --region, else AWS_DEFAULT_REGION / AWS_REGION, else us-east-1.
Exit status: 0 done, 1 runtime error (no credentials, no bucket, access denied, network), 2 usage.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from awsrun_mirror import (  # beside this file: Python puts the program's directory first on sys.path
    NOTHING_PUSHED,
    PROG,
    Failure,
    S3Url,
    UsageError,
    default_state_path,
    describe,
    parse_url,
    pull,
    push,
    warn,
)

PID_FILE_WAIT = 120.0
FINAL_PUSH_RETRIES = 3
CREDENTIALS_WAIT = 90.0


def with_credentials(work, wait_s: float = CREDENTIALS_WAIT):
    """`work()`, retried while the instance has no credentials yet: a profile attached a moment ago takes
    seconds to reach the metadata service (the restore on a replacement instance runs right then)."""
    from botocore.exceptions import NoCredentialsError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return work()
        except NoCredentialsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended: only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def follow(local_dir: Path, url: S3Url, state_path: Path, region: str | None, every: float, pid_file: Path,
           owner: str | None = None) -> str:
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Started beside the job by its wrapper, SIGINT comes ignored (bash does that for `&`): a Ctrl-C
        # meant for the job must not end the mirror before the job's own last checkpoint.
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, lambda *_: stopping.append(True))
    tick = min(every, 0.5)
    deadline = time.monotonic() + PID_FILE_WAIT
    while (pid := read_pid(pid_file)) is None and not stopping:
        if time.monotonic() > deadline:
            raise Failure(f"{pid_file} did not appear within {PID_FILE_WAIT:.0f} s")
        time.sleep(tick)
    while not stopping and process_alive(pid):
        try:
            summary = push(local_dir, url, state_path, region, owner)
            if summary != NOTHING_PUSHED:  # the job's log gets a line per round that did something
                print(summary, flush=True)
        except Exception as error:  # noqa: BLE001 -- any failure of one round is retried the next
            warn(f"push failed, retrying in {every:g} s: {describe(error)}")
        next_push = time.monotonic() + every
        while not stopping and process_alive(pid) and time.monotonic() < next_push:
            time.sleep(min(tick, max(0.0, next_push - time.monotonic())))
    return final_push(local_dir, url, state_path, region, backoff=min(every, 1.0), owner=owner)


def final_push(local_dir: Path, url: S3Url, state_path: Path, region: str | None, backoff: float,
               owner: str | None = None) -> str:
    """The push after the job: retried with a doubling wait (1, 2, 4 s in production), as it is the last."""
    delays = [backoff * 2 ** n for n in range(FINAL_PUSH_RETRIES)]
    while True:
        try:
            return push(local_dir, url, state_path, region, owner)
        except Exception as error:  # noqa: BLE001
            if not delays:
                raise Failure(f"final push failed: {describe(error)}") from error
            delay = delays.pop(0)
            warn(f"final push failed, retrying in {delay:g} s: {describe(error)}")
            time.sleep(delay)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise UsageError(message)


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def parser() -> Parser:
    top = Parser(prog=PROG, description="Mirror a checkpoint directory to S3 and back.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    push_ = commands.add_parser("push", help="upload new and changed files, delete the gone ones")
    pull_ = commands.add_parser("pull", help="download the objects missing locally")
    follow_ = commands.add_parser("follow", help="push every --every seconds while a process runs")
    for command in (push_, pull_, follow_):
        command.add_argument("--region")
        command.add_argument("--expected-owner", metavar="ACCOUNT_ID",
                             help="refuse the bucket unless this AWS account owns it (ExpectedBucketOwner)")
        command.add_argument("--state", type=Path, help="default: LOCAL_DIR/../.<dirname>.mirror.json")
    follow_.add_argument("--every", type=positive_seconds, default=60.0, metavar="SECONDS")
    follow_.add_argument("--pid-file", type=Path, required=True)
    for command in (push_, follow_):
        command.add_argument("local_dir", type=Path, metavar="LOCAL_DIR")
        command.add_argument("url", metavar="s3://bucket/prefix")
    pull_.add_argument("url", metavar="s3://bucket/prefix")
    pull_.add_argument("local_dir", type=Path, metavar="LOCAL_DIR")
    return top


def run(argv: list[str]) -> str:
    args = parser().parse_args(argv)
    url = parse_url(args.url)
    local_dir = args.local_dir.absolute()
    if local_dir.parent == local_dir:
        raise UsageError("LOCAL_DIR cannot be the root directory")
    if local_dir.exists() and not local_dir.is_dir():
        raise UsageError(f"{args.local_dir} is not a directory")
    state_path = (args.state or default_state_path(local_dir.resolve())).absolute()
    owner = args.expected_owner
    if args.command == "push":
        return push(local_dir, url, state_path, args.region, owner)
    if args.command == "pull":
        return with_credentials(lambda: pull(url, local_dir, state_path, args.region, owner))
    return follow(local_dir, url, state_path, args.region, args.every, args.pid_file, owner)


def main(argv: list[str]) -> int:
    try:
        print(run(argv), flush=True)
        return 0
    except UsageError as error:
        warn(f"error: {error}")
        return 2
    except Failure as error:
        warn(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        warn("error: interrupted")
        return 130
    except Exception as error:  # noqa: BLE001 -- boto3/botocore/OS errors: one line, not a traceback
        warn(f"error: {describe(error)}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
