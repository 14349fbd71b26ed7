"""The harness's own promises: a real EC2 endpoint, real SSH hosts through the ProxyCommand, real tmux,
and no traffic off loopback."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from awsrun.errors import HostKeyError, RemoteError
from awsrun.job import tmux
from awsrun.remote.ssh import SshTarget, connect
from tests.harness.cli import guarded_env

UBUNTU = "ami-0ubuntu2204a"


def launch(ec2, key_name: str) -> dict:
    reservation = ec2.run_instances(ImageId=UBUNTU, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                                    KeyName=key_name)
    return reservation["Instances"][0]


def key_pair(ec2, tmp_path: Path, name: str) -> Path:
    material = ec2.create_key_pair(KeyName=name, KeyType="ed25519")["KeyMaterial"]
    path = tmp_path / f"{name}.pem"
    path.write_text(material)
    path.chmod(0o600)
    return path


def target_for(instance: dict, key: Path, fleet, tmp_path: Path) -> SshTarget:
    return SshTarget(
        host=instance["PublicIpAddress"], user="ubuntu", key_path=key,
        known_hosts=tmp_path / "known_hosts", alias=instance["InstanceId"],
        proxy_command=fleet.proxy_command,
    )


def test_boto3_round_trip_through_the_moto_endpoint(ec2):
    instance = launch(ec2, key_name="none")
    described = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert described["InstanceType"] == "g4dn.xlarge"
    assert described["ImageId"] == UBUNTU
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    state = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] in ("shutting-down", "terminated")


def test_public_ami_parameter_is_seeded(aws):
    import boto3

    ssm = boto3.client("ssm", region_name="us-west-2", endpoint_url=aws.url)
    name = "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == UBUNTU


def test_ssh_command_and_file_round_trip_to_two_hosts_through_the_proxy(ec2, fleet, tmp_path):
    key = key_pair(ec2, tmp_path, "pair")
    first, second = launch(ec2, "pair"), launch(ec2, "pair")
    assert not first["PublicIpAddress"].startswith("127.")  # a moto address: only ever looked up
    remotes = [connect(target_for(i, key, fleet, tmp_path), wait_s=10) for i in (first, second)]
    try:
        for index, remote in enumerate(remotes):
            remote.put_bytes(f"payload {index}\n".encode(), f"/home/ubuntu/file-{index}.txt")
        assert remotes[0].get_bytes("/home/ubuntu/file-0.txt") == b"payload 0\n"
        # each instance is its own host: its own home, the other's file is not there
        assert remotes[1].run(["test", "-e", "/home/ubuntu/file-0.txt"]).exit_code == 1
        assert remotes[1].run(["cat", "/home/ubuntu/file-1.txt"]).stdout == "payload 1\n"
        who = remotes[0].run("whoami; echo $HOME").check()
        assert who.stdout.split() == ["ubuntu", "/home/ubuntu"]
    finally:
        for remote in remotes:
            remote.close()
    hosts = {fleet.host_of(first["InstanceId"]).address, fleet.host_of(second["InstanceId"]).address}
    assert hosts == {"127.0.0.2", "127.0.0.3"}
    assert (fleet.host_of(first["InstanceId"]).home / "file-0.txt").read_text() == "payload 0\n"


def test_quoted_arguments_reach_the_remote_verbatim(ec2, fleet, tmp_path):
    key = key_pair(ec2, tmp_path, "pair")
    remote = connect(target_for(launch(ec2, "pair"), key, fleet, tmp_path), wait_s=10)
    hostile = ["a b", "; rm -rf ~", "$(touch pwned)", "'", '"', "`id`", "ü"]
    try:
        result = remote.run(["printf", "%s\\n", *hostile]).check()
        assert result.stdout.splitlines() == hostile
        assert remote.run(["test", "-e", "pwned"]).exit_code == 1
    finally:
        remote.close()


def test_pip_on_the_hosts_installs_from_the_wheelhouse_only(ec2, fleet, tmp_path):
    """A job's requirements.txt, the bootstrap's torch and the mirror's boto3 are pip-installed on the hosts:
    from the local wheelhouse, never a package index (the user `ubuntu` would otherwise reach one)."""
    key = key_pair(ec2, tmp_path, "pair")
    remote = connect(target_for(launch(ec2, "pair"), key, fleet, tmp_path), wait_s=10)
    try:
        # in the wheelhouse (jobs/requirements.txt): found
        found = remote.run(["python3", "-m", "pip", "download", "-q", "--no-deps", "-d", "wheels", "cycler"])
        assert found.exit_code == 0, found
        # on any index, not in the wheelhouse: not found, because no index is asked
        missing = remote.run(["python3", "-m", "pip", "download", "--no-deps", "-d", "wheels", "requests-oauthlib"])
        assert missing.exit_code != 0 and "No matching distribution found for requests-oauthlib" in missing.stderr
        assert "Looking in indexes" not in missing.stdout + missing.stderr
    finally:
        remote.close()


def test_detached_tmux_job_survives_the_connection_and_reports_output_and_exit_code(ec2, fleet, tmp_path):
    key = key_pair(ec2, tmp_path, "pair")
    instance = launch(ec2, "pair")
    target = target_for(instance, key, fleet, tmp_path)
    remote = connect(target, wait_s=10)
    script = "import time; print('started', flush=True); time.sleep(1.5); print('finished'); raise SystemExit(3)"
    remote.run(tmux.start_job("work", "~", ["python3", "-c", script])).check()
    remote.close()  # the laptop closes

    remote = connect(target, wait_s=10)
    try:
        deadline = time.monotonic() + 60
        while remote.run(["test", "-e", ".awsrun/jobs/work/exit_code"]).exit_code != 0:
            assert time.monotonic() < deadline, "the job never recorded its exit code"
            time.sleep(0.2)
        log = remote.run(["cat", ".awsrun/jobs/work/log"]).check().stdout
        assert log.splitlines() == ["started", "finished"]
        assert remote.run(["cat", ".awsrun/jobs/work/exit_code"]).check().stdout.strip() == "3"
    finally:
        remote.close()


def test_pinned_host_key_is_checked_and_a_changed_one_refused(ec2, fleet, tmp_path):
    key = key_pair(ec2, tmp_path, "pair")
    instance = launch(ec2, "pair")
    target = target_for(instance, key, fleet, tmp_path)
    connect(target, wait_s=10).close()
    pinned = target.known_hosts.read_text()
    assert pinned.startswith(f"{instance['InstanceId']} ssh-ed25519 ")
    connect(target, wait_s=10).close()  # same key: accepted, nothing added
    assert target.known_hosts.read_text() == pinned

    target.known_hosts.write_text(f"{instance['InstanceId']} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey00\n")
    with pytest.raises(HostKeyError, match="changed") as raised:
        connect(target, wait_s=10)
    assert "ssh-keygen -R" in raised.value.hint


def test_unreachable_instance_fails_with_a_clear_message(ec2, fleet, tmp_path):
    key = key_pair(ec2, tmp_path, "pair")
    instance = launch(ec2, "pair")
    ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    with pytest.raises(RemoteError, match="did not answer"):
        connect(target_for(instance, key, fleet, tmp_path), wait_s=1)


def test_guard_blocks_non_loopback_connections_in_this_process():
    with pytest.raises(OSError, match="netguard"):
        socket.create_connection(("192.0.2.10", 22), timeout=1)
    with pytest.raises(OSError, match="netguard"):
        socket.getaddrinfo("ec2.us-east-1.amazonaws.com", 443)


def test_guard_blocks_non_loopback_connections_in_subprocesses():
    probe = "import socket; socket.create_connection(('192.0.2.10', 22), timeout=1)"
    completed = subprocess.run([sys.executable, "-c", probe], env=guarded_env(), capture_output=True, text=True)
    assert completed.returncode != 0
    assert "netguard: blocked connection to '192.0.2.10'" in completed.stderr


def test_cli_subprocesses_have_no_real_aws_or_network_path(cli):
    probe = ("import os, boto3, socket;"
             "print(os.environ['AWS_EC2_METADATA_DISABLED'], os.environ['AWS_CONFIG_FILE'],"
             " os.environ['AWSRUN_CALLER_IP_URL'])")
    completed = subprocess.run([sys.executable, "-c", probe], env=cli.environment(), capture_output=True, text=True)
    assert completed.stdout.split() == ["true", "/dev/null", "off"]


def test_harness_serves_ec2_quotas_and_the_classic_gpu_types(aws, ec2):
    import boto3

    quotas = boto3.client("service-quotas", region_name="us-east-1", endpoint_url=aws.url)

    def applied() -> dict:
        return {q["QuotaName"]: q["Value"] for q in quotas.list_service_quotas(ServiceCode="ec2")["Quotas"]}

    assert applied()["Running On-Demand P instances"] == 512
    aws.set_quota("Running On-Demand P instances", 0)  # a brand-new account
    assert applied()["Running On-Demand P instances"] == 0
    defaults = quotas.list_aws_default_service_quotas(ServiceCode="ec2")["Quotas"]
    assert {q["Value"] for q in defaults} == {0.0}
    offers = ec2.describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": ["p2.xlarge"]}],
    )["InstanceTypeOfferings"]
    assert {o["Location"] for o in offers} >= {"us-east-1a", "us-east-1b"}


def test_long_outputs_arrive_whole(ec2, fleet, tmp_path):
    """OpenSSH may send the exit status before the last data packets: run() must wait for the EOF."""
    key = key_pair(ec2, tmp_path, "pair")
    remote = connect(target_for(launch(ec2, "pair"), key, fleet, tmp_path), wait_s=10)
    try:
        for _ in range(60):
            result = remote.run("head -c 400000 /dev/zero | tr '\\0' x; echo END")
            assert len(result.stdout) == 400004 and result.stdout.endswith("END\n")
    finally:
        remote.close()
