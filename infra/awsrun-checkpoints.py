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
import ipaddress
import json
import os
import re
import signal
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROG = "awsrun-checkpoints"
# half-written files: "x.tmp", "x.part", "x.partial", and "x.tmp1234" (a writer's pid: train_stn's checkpoints)
HALF_WRITTEN = re.compile(r"\.(tmp\d*|part|partial)\Z")
PID_FILE_WAIT = 120.0
FINAL_PUSH_RETRIES = 3
CREDENTIALS_WAIT = 90.0
NOTHING_PUSHED = "pushed 0 files (0 bytes), deleted 0"
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class UsageError(Exception):
    """Bad arguments: exit 2."""


class Failure(Exception):
    """The work could not be done (AWS said no, no credentials, a local file error): exit 1."""


@dataclass(frozen=True)
class S3Url:
    bucket: str
    prefix: str  # no leading or trailing "/"; "" for the whole bucket

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def listing_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_url(text: str) -> S3Url:
    if not text.startswith("s3://"):
        raise UsageError(f"{text!r} is not an S3 URL (expected s3://bucket[/prefix])")
    bucket, _, prefix = text[len("s3://"):].partition("/")
    if not valid_bucket_name(bucket):
        raise UsageError(f"{bucket!r} is not a valid S3 bucket name (3-63 characters: a-z, 0-9, '.', '-')")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(f"prefix {prefix!r} has an empty, '.' or '..' segment")
    return S3Url(bucket, prefix)


def valid_bucket_name(name: str) -> bool:
    """The general-purpose bucket naming rules of
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html"""
    if not BUCKET_NAME.fullmatch(name) or ".." in name or ".-" in name or "-." in name:
        return False
    try:
        ipaddress.IPv4Address(name)
        return False
    except ValueError:
        return True


def local_files(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """{relative POSIX path: (size, mtime_ns)} of the files push mirrors under root."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        for name in filenames:
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if HALF_WRITTEN.search(name) or path == skip:
                continue
            try:
                info = path.stat()
            except FileNotFoundError:  # removed while we walked
                continue
            if stat.S_ISREG(info.st_mode):
                found[relative] = (info.st_size, info.st_mtime_ns)
    return found


def safe_relative(relative: str) -> bool:
    """Whether a key's path below the prefix stays inside LOCAL_DIR."""
    parts = relative.split("/")
    return bool(relative) and "\0" not in relative and all(part not in ("", ".", "..") for part in parts)


class State:
    """What was last pushed or pulled: {relative path: [size, mtime_ns]} for one URL, in a JSON file."""

    def __init__(self, path: Path, url: S3Url) -> None:
        self.path, self.url = path, str(url)
        try:
            saved = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            saved = {}
        self.files: dict[str, list[int]] = saved.get("files", {}) if saved.get("url") == self.url else {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".tmp")
        temp.write_text(json.dumps({"url": self.url, "files": self.files}))
        os.replace(temp, self.path)


def default_state_path(local_dir: Path) -> Path:
    return local_dir.parent / f".{local_dir.name}.mirror.json"


def s3_client(region: str | None, owner: str | None = None):
    """With `owner` (an account id), every request that can carry ExpectedBucketOwner does: S3 refuses it
    when another account owns the bucket (bucket names are global: a bucket someone else made under the
    name the job uses, with a policy letting everyone write, would otherwise receive the checkpoints)."""
    import boto3
    from botocore.config import Config

    region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    # A session per call: an instance profile's credentials can take seconds to reach IMDS after boot, and
    # a session that found none keeps none.
    client = boto3.session.Session(region_name=region).client("s3", config=Config(retries={"mode": "standard"}))
    if owner:
        def expect_owner(params, model, **_):
            if "ExpectedBucketOwner" in model.input_shape.members:
                params.setdefault("ExpectedBucketOwner", owner)

        client.meta.events.register("provide-client-params.s3.*", expect_owner)
    return client


def list_objects(client, url: S3Url) -> dict[str, int]:
    """{key: size} of every object under the URL's prefix."""
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=url.listing_prefix()):
        objects.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    return objects


def push(local_dir: Path, url: S3Url, state_path: Path, region: str | None, owner: str | None = None) -> str:
    client = s3_client(region, owner)
    remote = list_objects(client, url)
    state = State(state_path, url)
    files = local_files(local_dir, skip=state_path) if local_dir.is_dir() else {}
    pushed = pushed_bytes = deleted = 0
    try:
        for relative, (size, mtime_ns) in sorted(files.items()):
            if state.files.get(relative) == [size, mtime_ns] and url.key(relative) in remote:
                continue
            try:
                client.upload_file(str(local_dir / relative), url.bucket, url.key(relative))
            except FileNotFoundError:
                continue
            state.files[relative] = [size, mtime_ns]
            pushed, pushed_bytes = pushed + 1, pushed_bytes + size
        gone = [key for key in remote if key[len(url.listing_prefix()):] not in files]
        if files:  # an empty or missing directory is a fresh instance, not a deletion
            for start in range(0, len(gone), 1000):
                batch = [{"Key": key} for key in gone[start:start + 1000]]
                answer = client.delete_objects(Bucket=url.bucket, Delete={"Objects": batch, "Quiet": True})
                if answer.get("Errors"):
                    error = answer["Errors"][0]
                    raise Failure(f"could not delete s3://{url.bucket}/{error['Key']}: {error['Code']}")
                deleted += len(batch)
            for relative in set(state.files) - set(files):
                del state.files[relative]
    finally:
        state.save()
    return f"pushed {pushed} files ({pushed_bytes} bytes), deleted {deleted}"


def pull(url: S3Url, local_dir: Path, state_path: Path, region: str | None, owner: str | None = None) -> str:
    client = s3_client(region, owner)
    state = State(state_path, url)
    root = local_dir.resolve()
    pulled = pulled_bytes = kept = refused = 0
    try:
        for key, size in sorted(list_objects(client, url).items()):
            relative = key[len(url.listing_prefix()):]
            if relative.endswith("/") and size == 0 and safe_relative(relative.rstrip("/")):
                continue  # a "folder" marker, as the S3 console makes them
            target = root / relative
            if not safe_relative(relative) or not target.resolve().is_relative_to(root):
                warn(f"skipped s3://{url.bucket}/{key}: it would land outside {local_dir}")
                refused += 1
                continue
            if any(ord(c) < 32 or ord(c) == 127 for c in relative):
                warn(f"skipped s3://{url.bucket}/{key!r}: its name holds a control character")
                refused += 1
                continue
            if target.is_file() and target.stat().st_size == size:
                kept += 1
                continue
            try:
                download(client, url.bucket, key, target)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                # `a` and `a/b` both keys: one of them cannot be a file here
                warn(f"skipped s3://{url.bucket}/{key}: a file or directory of that name is in the way")
                refused += 1
                continue
            info = target.stat()
            state.files[relative] = [info.st_size, info.st_mtime_ns]
            pulled, pulled_bytes = pulled + 1, pulled_bytes + info.st_size
    finally:
        state.save()
    summary = f"pulled {pulled} files ({pulled_bytes} bytes), kept {kept}"
    return summary + (f", refused {refused}" if refused else "")


def download(client, bucket: str, key: str, target: Path) -> None:
    """Into a temporary file beside the target, then renamed: a reader never sees half a checkpoint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            client.download_fileobj(bucket, key, out)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


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


def describe(error: Exception) -> str:
    """One line for an error of boto3, botocore or the file system."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(error, NoCredentialsError):
        return "no AWS credentials (on EC2: is an instance profile with S3 access attached?)"
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return f"bucket {error.response['Error'].get('BucketName', '')} does not exist ({code})"
        if code in ("AccessDenied", "403", "Forbidden"):
            return (f"access denied ({error.operation_name}): does the instance profile allow it, and does "
                    "your account own the bucket?")
    return " ".join(str(error).split()) or type(error).__name__


def warn(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


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
