"""`submit --checkpoint-bucket` and `submit --recover` end to end: moto serves EC2, IAM and S3; the
instances are loopback sshd hosts. A job mirrors its outputs to S3 with credentials its instance profile
gives it (the IMDS stand-in hands them out, as EC2's metadata service does), EC2 ends the instance (the
job SIGTERMed first, as the agent does on an interruption notice), and `--recover` launches a replacement
on another host, restores the outputs from S3 and resumes the job where it stopped."""
from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import boto3
import pytest

from awsrun.job.projects import project_remote_dir
from tests.harness.clusters import local_cluster, wait_for  # noqa: F401 (a fixture)
from tests.harness.sshd import USER, SshHost
from tests.harness.torch_host import PIP_ARGS
from tests.test_faults import one_line_error
from tests.test_instance_gone import recorded_ids

SSH_CIDR = "203.0.113.7/32"
BUCKET, PREFIX = "ckpt-bucket", "team/runs"
JOB_PREFIX = f"{PREFIX}/default/work/"
STEPS, CKPT_EVERY = 60, 5
# A job in the shape of train_stn: a step counter checkpointed every CKPT_EVERY steps and on SIGTERM into
# AWSRUN_OUTPUT_DIR, resumed from there; each step it runs is logged once to steps.log (also mirrored).
JOB = f"""\
import json, os, signal, sys, time
out = os.environ["AWSRUN_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
ckpt = os.path.join(out, "ckpt.json")
step = json.load(open(ckpt))["step"] if os.path.exists(ckpt) else 0
print("resuming at", step, flush=True)
def save(step):
    with open(ckpt + ".tmp", "w") as f:
        json.dump({{"step": step}}, f)
    os.replace(ckpt + ".tmp", ckpt)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
while step < {STEPS}:
    time.sleep(0.1)
    step += 1
    with open(os.path.join(out, "steps.log"), "a") as f:
        f.write(f"{{step}}\\n")
    if step % {CKPT_EVERY} == 0 or stop:
        save(step)
    if stop:
        print("stopped by SIGTERM at step", step, flush=True)
        sys.exit(143)
save(step)
print("done at", step, flush=True)
"""


def ok(result):
    assert result.exit_code == 0, result
    return result


@pytest.fixture
def s3(aws):
    return boto3.client("s3", region_name="us-east-1", endpoint_url=aws.url)


@pytest.fixture
def instance_side(fleet, aws, imds):
    """What an EC2 instance's boto3 finds by itself, pointed at the harness: IMDS for the instance
    profile's credentials (none until a profile is attached) and the moto endpoint, on every host."""
    user = pwd.getpwnam(USER)
    for host in fleet.hosts:
        directory = host.home / ".aws"
        directory.mkdir(exist_ok=True)
        config = directory / "config"
        config.write_text(f"[default]\nregion = us-east-1\nendpoint_url = {aws.url}\n"
                          f"ec2_metadata_service_endpoint = {imds.url}\n")
        for path in (directory, config):
            os.chown(path, user.pw_uid, user.pw_gid)
    return imds


def _instance_id(cli) -> str:
    (instance_id,) = recorded_ids(cli)
    return instance_id


def _keys(s3, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def _ec2(aws):
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=aws.url)


@dataclass
class Recovery:
    first: SshHost        # the host of the instance EC2 ended
    second: SshHost       # the host of its replacement
    stopped_log: str      # the job's log on the first instance
    log: str              # the resumed job's log
    outputs: Path         # runs/work on the replacement
    mirrored: dict[str, bytes]  # runs/work in S3 when the first instance ended


def interrupt_and_recover(cli, aws, fleet, instance_side, s3, submit_args: tuple[str, ...],
                          ready: Callable[[dict[str, bytes]], bool], timeout: float = 120) -> Recovery:
    """Up, submit with a checkpoint bucket, wait until S3 holds what `ready` wants, SIGTERM the job (as
    the agent does at an interruption notice), terminate the instance, `submit --recover`, wait for the end."""
    ok(cli("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap"))
    first_id = _instance_id(cli)
    first = fleet.host_of(first_id)

    submitted = ok(cli("submit", "--checkpoint-bucket", f"s3://{BUCKET}/{PREFIX}", *submit_args))
    assert f"created S3 bucket {BUCKET}" in submitted.stderr, submitted
    assert f"mirroring runs/work to s3://{BUCKET}/{PREFIX}/default/work every 0.5s" in submitted.stderr
    (association,) = _ec2(aws).describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    assert association["InstanceId"] == first_id
    profile = association["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    assert profile.startswith("awsrun-checkpoints-ckpt-bucket-")
    instance_side.role = profile  # EC2 now serves the profile role's credentials to the instance

    wait_for(lambda: ready(_keys(s3, JOB_PREFIX)), timeout=timeout, what="a checkpoint mirrored to S3")
    job_dir = first.home / ".awsrun" / "jobs" / "work"
    os.kill(int((job_dir / "pid").read_text()), signal.SIGTERM)
    wait_for(lambda: (job_dir / "exit_code").exists(), timeout=60, what="the job to checkpoint and end")
    stopped_log = (job_dir / "log").read_text()
    mirrored = _keys(s3, JOB_PREFIX)  # the wrapper waited for the mirror's last push before recording the exit
    _ec2(aws).terminate_instances(InstanceIds=[first_id])
    first.reset()  # the instance and its disk are gone
    # The replacement is launched without a profile; awsrun attaches it (asserted below) and EC2 serves its
    # credentials from then on: the stand-in serves them throughout, the association is checked in moto.

    recovered = ok(cli("submit", "--recover", "--no-bootstrap", timeout=240))
    second_id = _instance_id(cli)
    assert second_id != first_id and f"launched {second_id}" in recovered.stderr, recovered
    assert ("job 'work': resubmitted:" in recovered.stderr
            and f"restored from s3://{BUCKET}/{JOB_PREFIX[:-1]}" in recovered.stderr), recovered
    second = fleet.host_of(second_id)
    assert second is not first
    associations = _ec2(aws).describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [second_id]}])["IamInstanceProfileAssociations"]
    assert [a["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for a in associations] == [profile]

    job_dir = second.home / ".awsrun" / "jobs" / "work"
    wait_for(lambda: (job_dir / "exit_code").exists(), timeout=timeout, what="the resumed job to finish")
    log = (job_dir / "log").read_text()
    assert (job_dir / "exit_code").read_text().strip() == "0", log
    outputs = second.home / "awsrun" / project_remote_dir("/", cli.cwd).lstrip("/") / "runs" / "work"
    return Recovery(first, second, stopped_log, log, outputs, mirrored)


def test_a_job_whose_instance_ec2_ended_resumes_on_a_replacement_from_s3(
        cli, aws, fleet, instance_side, s3, project):
    cli.env.update({"AWSRUN_PIP_ARGS": PIP_ARGS, "AWSRUN_CHECKPOINT_EVERY": "0.5"})
    (project / "job.py").write_text(JOB)
    run = interrupt_and_recover(cli, aws, fleet, instance_side, s3, ("job.py",),
                                ready=lambda keys: b'"step": ' in keys.get("ckpt.json", b""))
    stopped = int(run.stopped_log.split("stopped by SIGTERM at step ")[1].split()[0])
    assert 0 < stopped < STEPS, run.stopped_log
    assert json.loads(run.mirrored["ckpt.json"]) == {"step": stopped}
    assert run.mirrored["steps.log"].decode().split() == [str(s) for s in range(1, stopped + 1)]

    assert f"resuming at {stopped}" in run.log and f"done at {STEPS}" in run.log
    # every step ran exactly once across the two instances: nothing repeated, nothing skipped
    assert (run.outputs / "steps.log").read_text().split() == [str(s) for s in range(1, STEPS + 1)]
    final = _keys(s3, JOB_PREFIX)
    assert json.loads(final["ckpt.json"]) == {"step": STEPS}
    assert final["steps.log"] == (run.outputs / "steps.log").read_bytes()

    again = ok(cli("submit", "--recover", "--no-bootstrap"))
    assert "job 'work': finished: exited 0: nothing to do" in again.stderr and "launched" not in again.stderr
    ok(cli("down", "--yes"))


def test_train_stn_resumes_from_its_s3_checkpoint_on_a_replacement(
        cli, aws, fleet, instance_side, s3, project, torch_host, job_pythonpath):
    """The real job: its checkpoints (written as ckpt-N.pt.tmp<pid>, then renamed) and metrics reach S3,
    and on the replacement it resumes from the SIGTERM checkpoint and ends at the full step count."""
    from tests.test_spot_recovery import _project, _train_steps

    # long enough (~8 s of training here) that the SIGTERM lands mid-run once a checkpoint is in S3
    stn_steps, log_every = 2000, 50
    job_args = ("train_stn.py", "--dataset", "mnist5k", "--model", "fcn", "--steps", str(stn_steps),
                "--batch-size", "32", "--log-every", str(log_every), "--eval-every", str(stn_steps),
                "--ckpt-every", "50")
    _project(project)
    venv = "~/venvs/stn-recover"  # every host gets the torch host's venv, hard-linked (same path on each)
    for host in fleet.hosts:
        copy = host.home / venv.removeprefix("~/")
        if not copy.exists():
            user = pwd.getpwnam(USER)
            copy.parent.mkdir(exist_ok=True)
            os.chown(copy.parent, user.pw_uid, user.pw_gid)
            subprocess.run(["cp", "-al", str(torch_host.local_venv), str(copy)], check=True)
    cli.env.update({"AWSRUN_PIP_ARGS": PIP_ARGS, "AWSRUN_CHECKPOINT_EVERY": "0.5", "AWSRUN_VENV": venv})
    run = interrupt_and_recover(
        cli, aws, fleet, instance_side, s3, ("--env", f"PYTHONPATH={job_pythonpath}", *job_args),
        ready=lambda keys: any(k.startswith("checkpoints/ckpt-") for k in keys), timeout=240)

    found = re.search(r"stopped by SIGTERM at step (\d+)/", run.stopped_log)
    assert found, run.stopped_log[-2000:]
    stopped = int(found.group(1))
    assert 0 < stopped < stn_steps, run.stopped_log[-2000:]
    assert f"checkpoints/ckpt-{stopped:08d}.pt" in run.mirrored  # the SIGTERM checkpoint reached S3
    assert not [k for k in run.mirrored if ".tmp" in k]          # never a half-written one
    resumed = int(re.search(r"resuming from \S+ckpt-\d+\.pt \(step (\d+)\)", run.log).group(1))
    assert resumed == stopped  # nothing repeated
    summary = json.loads((run.outputs / "summary.json").read_text())
    assert (summary["steps"], summary["resumed_from_step"]) == (stn_steps, resumed)
    assert _train_steps(run.outputs) == list(range(log_every, stn_steps + 1, log_every))
    assert "summary.json" in _keys(s3, JOB_PREFIX)  # the finished run's outputs are in S3 too
    ok(cli("down", "--yes"))


def test_recover_without_a_mirrored_job_says_how_to_get_one(cli, aws, fleet):
    ok(cli("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap"))
    result = cli("submit", "--recover")
    assert result.exit_code == 7 and one_line_error(result).startswith("error: no job of cluster 'default' mirrors")
    assert "--checkpoint-bucket" in result.stderr
    ok(cli("down", "--yes"))


@pytest.mark.parametrize("args, message", [
    (("--checkpoint-bucket", "s3://Bad_Bucket", "job.py"), "'Bad_Bucket' is not a valid S3 bucket name"),
    (("--recover", "job.py"), "--recover resubmits the jobs as they were submitted"),
    (("--no-bootstrap", "job.py"), "--no-bootstrap goes with --recover"),
    ((), "submit needs a SCRIPT"),
])
def test_bad_checkpoint_and_recover_input_is_refused_before_anything_happens(cli, project, args, message):
    (project / "job.py").write_text("print('x')\n")
    result = cli("submit", *args)
    assert result.exit_code == 2 and message in one_line_error(result), result
    assert not (cli.home / "recover").exists()


WAITING_JOB = """\
import os, pathlib, sys, time
out = pathlib.Path(os.environ["AWSRUN_OUTPUT_DIR"])
while not pathlib.Path("go").exists():
    time.sleep(0.05)
(out / "result.txt").write_text(sys.argv[1])
"""


def test_on_the_local_provider_the_mirror_uses_this_machines_credentials_and_its_failures_reach_the_log(
        cli, aws, local_cluster, s3, project, tmp_path):
    cli.env["AWSRUN_CHECKPOINT_EVERY"] = "0.3"
    # this machine's credentials as a file: the credentials in awsrun's environment never reach the job's
    # tmux server (awsrun.job.tmux.SECRET_ENV), so the mirror beside the job reads the shared credentials file
    credentials = tmp_path / "aws-credentials"
    credentials.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    cli.env["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials)
    (project / "job.py").write_text(WAITING_JOB)
    go = local_cluster.project(project) / "go"

    fine = ok(cli("submit", "--checkpoint-bucket", "s3://local-ckpts", "--name", "fine", "job.py", "hello"))
    assert "created S3 bucket local-ckpts" in fine.stderr and "instance profile" not in fine.stderr
    go.parent.mkdir(parents=True, exist_ok=True)
    go.write_text("")
    wait_for(lambda: (local_cluster.job("fine") / "exit_code").exists(), timeout=60, what="the job to end")
    objects = s3.list_objects_v2(Bucket="local-ckpts")["Contents"]
    assert [o["Key"] for o in objects] == ["default/fine/result.txt"]
    assert s3.get_object(Bucket="local-ckpts", Key="default/fine/result.txt")["Body"].read() == b"hello"
    go.unlink()
    pulled = ok(cli("pull", "fine", "--from-s3", "--to", str(project / "back")))
    assert "pulled 1 files (5 bytes)" in pulled.stderr and (project / "back" / "result.txt").read_text() == "hello"
    for key in ("default/fine/a", "default/fine/a/b", "default/fine/bad\x1bname"):  # what no job wrote
        s3.put_object(Bucket="local-ckpts", Key=key, Body=b"x")
    odd = ok(cli("pull", "fine", "--from-s3", "--to", str(project / "odd")))
    assert (project / "odd" / "result.txt").read_text() == "hello" and (project / "odd" / "a").read_text() == "x"
    assert "warning: skipped s3://local-ckpts/default/fine/a/b: a file or directory of that name is in the way" \
        in odd.stderr and "its name holds a control character" in odd.stderr, odd
    for key in ("default/fine/a", "default/fine/a/b", "default/fine/bad\x1bname"):
        s3.delete_object(Bucket="local-ckpts", Key=key)
    unknown = cli("pull", "nosuch", "--from-s3")
    assert unknown.exit_code == 7 and "was not submitted with --checkpoint-bucket" in one_line_error(unknown)

    ok(cli("submit", "--checkpoint-bucket", "s3://local-ckpts", "--name", "stopped", "job.py", "x"))
    ok(cli("kill", "stopped", "--force"))
    kept = ok(cli("submit", "--recover", "--name", "stopped"))
    assert "job 'stopped': killed: stopped with `awsrun kill`: not resumed" in kept.stderr, kept
    assert (local_cluster.job("stopped") / "killed_at").exists()  # the job dir of the killed run, untouched

    ok(cli("submit", "--checkpoint-bucket", "s3://doomed-ckpts", "--name", "broken", "job.py", "lost"))
    s3.delete_bucket(Bucket="doomed-ckpts")  # still empty: the job has written nothing yet
    go.write_text("")
    wait_for(lambda: (local_cluster.job("broken") / "exit_code").exists(), timeout=60, what="the job to end")
    log = ok(cli("logs", "broken")).stdout
    assert ("awsrun-checkpoints: error: final push failed: bucket doomed-ckpts does not exist (NoSuchBucket)"
            in log), log
