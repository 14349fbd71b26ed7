"""The region is resolved one way by every command: --region, the `region` setting, AWS_REGION,
AWS_DEFAULT_REGION, the profile, in that order. The harness sets both variables, so each source is tried
here alone, with the others removed from the environment."""
from __future__ import annotations

import json
import subprocess

import pytest

SOURCES = ("flag", "setting", "AWS_REGION", "AWS_DEFAULT_REGION", "profile")


def run_alone(cli, tmp_path, source: str, region: str, *args: str):
    env = cli.environment()
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWSRUN_REGION"):
        env.pop(name, None)
    flag: list[str] = []
    if source == "flag":
        flag = ["--region", region]
    elif source == "setting":
        env["AWSRUN_REGION"] = region
    elif source == "profile":
        config = tmp_path / "aws-config"
        config.write_text(f"[default]\nregion = {region}\n")
        env["AWS_CONFIG_FILE"] = str(config)
    else:
        env[source] = region
    return subprocess.run(cli.argv(*args, *flag), cwd=cli.cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("source", SOURCES)
def test_prices_takes_the_region_from_each_source_alone(aws, cli, tmp_path, source):
    done = run_alone(cli, tmp_path, source, "eu-west-1", "prices", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["region"] == "eu-west-1"


@pytest.mark.parametrize("source", ["AWS_REGION", "AWS_DEFAULT_REGION", "profile"])
def test_status_finds_a_cluster_launched_in_the_region_of_each_environment_source(aws, cli, tmp_path, source):
    import boto3

    ec2 = boto3.client("ec2", region_name="eu-west-1", endpoint_url=aws.url)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge", TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": "awsrun:cluster", "Value": "lost"},
                                             {"Key": "awsrun:owner", "Value": "arn:aws:sts::123456789012:user/moto"}]}])
    done = run_alone(cli, tmp_path, source, "eu-west-1", "status", "--json")
    assert done.returncode == 0, done.stderr
    assert "lost" in {c["name"] for c in json.loads(done.stdout)["clusters"]}, done.stdout


def test_no_region_anywhere_is_one_line_naming_the_sources(aws, cli, tmp_path):
    env = cli.environment()
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        env.pop(name, None)
    # (`prices` no longer needs one: it shows the catalog's list prices for us-east-1 then; `up` does.)
    done = subprocess.run(cli.argv("up", "--ssh-cidr", "203.0.113.7/32"), cwd=cli.cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: no AWS region") and "AWS_REGION" in done.stderr
