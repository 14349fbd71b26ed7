"""infra/awsrun-checkpoints.py, run as the instance runs it: a subprocess whose AWS credentials come from
the instance-metadata stand-in (an instance profile), talking to S3 on the moto endpoint."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from tests.harness.cli import REPO, guarded_env

PROGRAM = REPO / "infra" / "awsrun-checkpoints.py"
BUCKET = "ckpt-bucket"
URL = f"s3://{BUCKET}/runs/stn"


@pytest.fixture
def instance_env(aws, imds, tmp_path):
    """An instance's environment: no keys, no config files, credentials only through IMDS."""
    imds.role = "awsrun-instance"
    env = guarded_env({"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url, "AWS_ENDPOINT_URL": aws.url,
                       "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials")})
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_EC2_METADATA_DISABLED"):
        del env[name]
    return env


@pytest.fixture
def s3(aws):
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=aws.url)
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


def mirror(env, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROGRAM), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def objects(s3) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {item["Key"]: s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in listing}


def versions(s3, key: str) -> int:
    """How many times the key was written (the bucket is versioned)."""
    answer = s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    return sum(1 for version in answer.get("Versions", []) if version["Key"] == key)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def checkpoints(tmp_path: Path) -> Path:
    out = tmp_path / "job" / "checkpoints"
    write(out / "step-100.pt", b"a" * 1000)
    write(out / "sub" / "metrics.json", b'{"loss": 0.5}')
    return out


def test_push_uploads_new_and_changed_files_only(instance_env, s3, tmp_path):
    out = checkpoints(tmp_path)
    write(out / "step-200.pt.tmp", b"half written")
    write(out / "step-200.pt.part", b"half written")
    write(out / "ckpt-00000200.pt.tmp4242", b"half written")  # train_stn's temporary name (its pid)
    write(out / ".cache" / "index", b"not a checkpoint")

    first = mirror(instance_env, "push", out, URL)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "pushed 2 files (1013 bytes), deleted 0\n"
    assert objects(s3) == {"runs/stn/step-100.pt": b"a" * 1000, "runs/stn/sub/metrics.json": b'{"loss": 0.5}'}
    assert (tmp_path / "job" / ".checkpoints.mirror.json").is_file()

    write(out / "sub" / "metrics.json", b'{"loss": 0.25}')
    second = mirror(instance_env, "push", out, URL)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "pushed 1 files (14 bytes), deleted 0\n"
    assert s3.get_object(Bucket=BUCKET, Key="runs/stn/sub/metrics.json")["Body"].read() == b'{"loss": 0.25}'
    assert versions(s3, "runs/stn/sub/metrics.json") == 2
    assert versions(s3, "runs/stn/step-100.pt") == 1

    assert mirror(instance_env, "push", out, URL).stdout == "pushed 0 files (0 bytes), deleted 0\n"


def test_push_deletes_objects_whose_file_is_gone(instance_env, s3, tmp_path):
    out = checkpoints(tmp_path)
    assert mirror(instance_env, "push", out, URL).returncode == 0
    (out / "step-100.pt").unlink()

    result = mirror(instance_env, "push", out, URL)
    assert result.stdout == "pushed 0 files (0 bytes), deleted 1\n", result.stderr
    assert set(objects(s3)) == {"runs/stn/sub/metrics.json"}


@pytest.mark.parametrize("local", ["missing", "empty", "only-tmp"])
def test_push_of_missing_or_empty_dir_deletes_nothing(instance_env, s3, tmp_path, local):
    s3.put_object(Bucket=BUCKET, Key="runs/stn/step-100.pt", Body=b"from the lost instance")
    out = tmp_path / "fresh" / "checkpoints"
    if local != "missing":
        out.mkdir(parents=True)
    if local == "only-tmp":
        write(out / "step-1.pt.tmp", b"x")

    result = mirror(instance_env, "push", out, URL)
    assert (result.returncode, result.stdout) == (0, "pushed 0 files (0 bytes), deleted 0\n"), result.stderr
    assert objects(s3) == {"runs/stn/step-100.pt": b"from the lost instance"}


def test_pull_restores_files_and_next_push_uploads_nothing(instance_env, s3, tmp_path):
    source = checkpoints(tmp_path)
    write(source / "deep" / "er" / "opt.bin", bytes(range(256)) * 40)
    assert mirror(instance_env, "push", source, URL).returncode == 0
    target = tmp_path / "replacement" / "checkpoints"

    pulled = mirror(instance_env, "pull", URL, target)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == "pulled 3 files (11253 bytes), kept 0\n"
    for path in source.rglob("*"):
        if path.is_file():
            assert (target / path.relative_to(source)).read_bytes() == path.read_bytes()
    assert not [path for path in target.rglob("*") if path.name.endswith(".part")]

    assert mirror(instance_env, "push", target, URL).stdout == "pushed 0 files (0 bytes), deleted 0\n"
    assert versions(s3, "runs/stn/deep/er/opt.bin") == 1
    assert mirror(instance_env, "pull", URL, target).stdout == "pulled 0 files (0 bytes), kept 3\n"


def test_pull_refuses_keys_that_escape_the_directory(instance_env, s3, tmp_path):
    for key in ("runs/stn/../escaped", "runs/stn//abs", "runs/stn/a/../../escaped2", "runs/stn/ok.pt"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"payload")
    target = tmp_path / "inside" / "checkpoints"

    result = mirror(instance_env, "pull", URL, target)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pulled 1 files (7 bytes), kept 0, refused 3\n"
    assert len(result.stderr.splitlines()) == 3 and "outside" in result.stderr
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert written == ["inside/.checkpoints.mirror.json", "inside/checkpoints/ok.pt"]
    assert not Path("/abs").exists()


def start_follow(env, out: Path, pid_file: Path, every: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PROGRAM), "follow", "--every", every, "--pid-file",
                             str(pid_file), str(out), URL], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def wait_for(condition, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_follow_pushes_while_the_job_runs_and_once_more_when_it_ends(instance_env, s3, tmp_path):
    out = tmp_path / "job" / "checkpoints"
    pid_file = tmp_path / "job" / "pid"
    follower = start_follow(instance_env, out, pid_file, every="0.2")
    job = subprocess.Popen(["sleep", "60"])
    try:
        write(pid_file, f"{job.pid}\n".encode())
        write(out / "step-1.pt", b"one")
        wait_for(lambda: "runs/stn/step-1.pt" in objects(s3))
        write(out / "step-2.pt", b"two")
        (out / "step-1.pt").unlink()
    finally:
        job.kill()
        job.wait()
    stdout, stderr = follower.communicate(timeout=30)
    assert follower.returncode == 0, stderr
    assert objects(s3) == {"runs/stn/step-2.pt": b"two"}
    assert stdout.splitlines()[-1].startswith("pushed ")


def test_follow_on_sigterm_pushes_then_exits(instance_env, s3, tmp_path):
    out = tmp_path / "job" / "checkpoints"
    pid_file = tmp_path / "job" / "pid"
    job = subprocess.Popen(["sleep", "60"])
    try:
        write(pid_file, str(job.pid).encode())
        write(out / "step-1.pt", b"one")
        follower = start_follow(instance_env, out, pid_file, every="600")
        wait_for(lambda: "runs/stn/step-1.pt" in objects(s3))
        write(out / "step-2.pt", b"two")
        follower.send_signal(signal.SIGTERM)
        stdout, stderr = follower.communicate(timeout=30)
        assert follower.returncode == 0, stderr
        assert job.poll() is None
        assert objects(s3) == {"runs/stn/step-1.pt": b"one", "runs/stn/step-2.pt": b"two"}
        assert stdout.splitlines()[-1] == "pushed 1 files (3 bytes), deleted 0"
    finally:
        job.kill()
        job.wait()


def test_follow_beside_a_job_outlasts_a_ctrl_c_meant_for_the_job(instance_env, s3, tmp_path):
    """The job's wrapper starts the mirror with `&`, so it inherits SIGINT ignored: a Ctrl-C in the pane
    (attach, `awsrun kill`) goes to the job, which checkpoints, and that checkpoint is still pushed."""
    out = tmp_path / "job" / "checkpoints"
    job = subprocess.Popen(["sleep", "60"])
    pid_file = write(tmp_path / "job" / "pid", str(job.pid).encode())
    write(out / "step-1.pt", b"one")
    follower = start_follow(instance_env, out, pid_file, every="600",
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(lambda: "runs/stn/step-1.pt" in objects(s3))
        follower.send_signal(signal.SIGINT)
        write(out / "step-2.pt", b"two")  # the job's checkpoint on Ctrl-C
        time.sleep(1.0)
        assert follower.poll() is None
    finally:
        job.kill()
        job.wait()
    stdout, stderr = follower.communicate(timeout=30)
    assert follower.returncode == 0, stderr
    assert objects(s3) == {"runs/stn/step-1.pt": b"one", "runs/stn/step-2.pt": b"two"}


def test_pull_waits_for_credentials_a_new_profile_is_still_spreading(instance_env, s3, imds, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="runs/stn/ckpt.pt", Body=b"weights")
    imds.role = None
    puller = subprocess.Popen([sys.executable, str(PROGRAM), "pull", URL, str(tmp_path / "restored")],
                              env=instance_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert puller.poll() is None  # still waiting, not failed
    imds.role = "awsrun-instance"
    stdout, stderr = puller.communicate(timeout=30)
    assert puller.returncode == 0, stderr
    assert stdout == "pulled 1 files (7 bytes), kept 0\n"
    assert (tmp_path / "restored" / "ckpt.pt").read_bytes() == b"weights"


def test_follow_retries_without_credentials_and_fails_if_the_final_push_does(instance_env, s3, imds, tmp_path):
    imds.role = None
    out = checkpoints(tmp_path)
    job = subprocess.Popen(["sleep", "60"])
    pid_file = write(tmp_path / "job" / "pid", str(job.pid).encode())
    follower = start_follow(instance_env, out, pid_file, every="0.2")
    wait_for(lambda: "push failed" in follower.stderr.readline())
    job.kill()  # the job ends: then the final push, which cannot succeed either
    job.wait()

    stdout, stderr = follower.communicate(timeout=30)
    assert follower.returncode == 1
    assert stderr.splitlines()[-1].startswith("awsrun-checkpoints: error: final push failed: no AWS credentials")
    assert "Traceback" not in stderr
    assert objects(s3) == {}


def test_follow_picks_up_credentials_that_arrive_late(instance_env, s3, imds, tmp_path):
    imds.role = None
    out = checkpoints(tmp_path)
    pid_file = tmp_path / "job" / "pid"
    job = subprocess.Popen(["sleep", "60"])
    try:
        write(pid_file, str(job.pid).encode())
        follower = start_follow(instance_env, out, pid_file, every="0.2")
        wait_for(lambda: "no AWS credentials" in follower.stderr.readline())
        imds.role = "awsrun-instance"
        wait_for(lambda: len(objects(s3)) == 2)
    finally:
        job.kill()
        job.wait()
    assert follower.wait(timeout=30) == 0


def test_region_flag_reaches_a_bucket_in_that_region(instance_env, aws, tmp_path):
    s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=aws.url)
    s3.create_bucket(Bucket="ckpt-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    result = mirror(instance_env, "push", "--region", "eu-west-1", checkpoints(tmp_path), "s3://ckpt-eu/x/")
    assert result.stdout == "pushed 2 files (1013 bytes), deleted 0\n", result.stderr
    assert sorted(item["Key"] for item in s3.list_objects_v2(Bucket="ckpt-eu")["Contents"]) == [
        "x/step-100.pt", "x/sub/metrics.json"]


def test_no_credentials_is_one_line_and_exit_1(instance_env, s3, imds, tmp_path):
    imds.role = None
    result = mirror(instance_env, "push", checkpoints(tmp_path), URL)
    assert result.returncode == 1
    assert result.stderr.startswith("awsrun-checkpoints: error: no AWS credentials")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_missing_bucket_is_one_line_and_exit_1(instance_env, aws, tmp_path):
    for args in (["push", checkpoints(tmp_path), "s3://no-such-bucket/x"], ["pull", "s3://no-such-bucket", tmp_path / "y"]):
        result = mirror(instance_env, *args)
        assert result.returncode == 1
        assert result.stderr == "awsrun-checkpoints: error: bucket no-such-bucket does not exist (NoSuchBucket)\n"


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "s3://Bad_Bucket/x", "s3://ab/x", "s3://192.168.1.1/x",
                                 "s3://a..b/x", "s3://bucket/a/../b", "bucket/x"])
def test_bad_url_is_a_usage_error(tmp_path, url):
    result = mirror(guarded_env(), "push", tmp_path, url)
    assert result.returncode == 2
    assert result.stderr.startswith("awsrun-checkpoints: error: ") and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("args", [[], ["push"], ["sync", "a", "b"], ["follow", "d", URL],
                                  ["follow", "--every", "0", "--pid-file", "p", "d", URL],
                                  ["follow", "--every", "soon", "--pid-file", "p", "d", URL]])
def test_bad_arguments_are_a_usage_error(args):
    result = mirror(guarded_env(), *args)
    assert result.returncode == 2
    assert result.stderr.startswith("awsrun-checkpoints: error: ") and len(result.stderr.splitlines()) == 1
