"""The S3 mirror of a checkpoint directory, as awsrun-checkpoints.py (beside it) runs it: which files count
(half-written ones and dot-directories do not), the state file of what was pushed, push, pull and the one-line
description of a boto3 or file error. Stdlib + boto3 only; shipped to the instance with the program.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROG = "awsrun-checkpoints"  # its messages are the program's
# half-written files: "x.tmp", "x.part", "x.partial", and "x.tmp1234" (a writer's pid: train_stn's checkpoints)
HALF_WRITTEN = re.compile(r"\.(tmp\d*|part|partial)\Z")
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
