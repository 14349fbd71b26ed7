"""The S3 mirror's pure builders: bucket URLs, the instance profile's policy, the shell steps submit adds."""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from awsrun.errors import ConfigError
from awsrun.job import checkpoints
from awsrun.job.checkpoints import BucketUrl, MirrorPlan, parse_url
from awsrun.settings import load_settings


@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://my-bucket", "my-bucket", ""),
    ("s3://my-bucket/", "my-bucket", ""),
    ("s3://my.bucket.2/runs", "my.bucket.2", "runs"),
    ("s3://abc/a//b/", "abc", "a/b"),
])
def test_bucket_urls_parse(url, bucket, prefix):
    assert parse_url(url) == BucketUrl(bucket, prefix)
    assert str(parse_url(url)) == (f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}")


@pytest.mark.parametrize("url", [
    "my-bucket", "https://my-bucket", "s3://", "s3://ab", "s3://My-Bucket", "s3://under_score", "s3://-dash",
    "s3://dash-", "s3://a..b", "s3://192.168.1.1", "s3://" + "a" * 64, "s3://ok-bucket/../up",
    "s3://ok-bucket/a b", "s3://ok-bucket/x\ny", "s3://ok-bucket/$(reboot)", "s3://ok-bucket/.",
])
def test_bad_bucket_urls_are_one_line_config_errors(url):
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    assert "\n" not in caught.value.message


def test_the_setting_is_checked_where_it_comes_from(tmp_path):
    with pytest.raises(ConfigError, match=r"^AWSRUN_CHECKPOINT_BUCKET: 'Bad' is not a valid S3 bucket name"):
        load_settings(tmp_path, {"AWSRUN_CHECKPOINT_BUCKET": "s3://Bad"})
    assert load_settings(tmp_path, {"AWSRUN_CHECKPOINT_BUCKET": "s3://good/p"}).checkpoint_bucket == "s3://good/p"


def test_each_job_has_its_own_place_under_the_base():
    assert str(checkpoints.job_url(BucketUrl("b", "team/runs"), "default", "work")) == "s3://b/team/runs/default/work"
    assert str(checkpoints.job_url(BucketUrl("b"), "c", "s")) == "s3://b/c/s"


def test_profile_names_fit_iam_and_differ_per_prefix_cluster_and_owner():
    long = BucketUrl("b" * 63, "p")
    assert len(checkpoints.profile_name(long, "c" * 40, "arn:aws:iam::1:user/u")) <= 64
    names = {checkpoints.profile_name(BucketUrl("b", p), c, o)
             for p in ("x", "y") for c in ("default", "exp") for o in ("arn:a", "arn:b")}
    assert len(names) == 8 and all(n.startswith("awsrun-checkpoints-b-") for n in names)


@pytest.mark.parametrize("url", ["s3://ok-bucket/exp*", "s3://ok-bucket/a/*", "s3://ok-bucket/e?p", "s3://ok-bucket/*"])
def test_wildcards_in_the_prefix_are_refused(url):
    """'*' and '?' are wildcards in IAM resources and s3:prefix conditions: s3://b/exp* would also grant
    s3://b/exp-other/."""
    with pytest.raises(ConfigError) as caught:
        parse_url(url)
    assert "cannot be used in a key" in caught.value.message


def test_the_instance_may_touch_only_its_prefix():
    policy = json.loads(checkpoints.access_policy(BucketUrl("bkt", "team/runs")))
    listing, objects = policy["Statement"]
    assert listing == {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                       "Resource": "arn:aws:s3:::bkt",
                       "Condition": {"StringLike": {"s3:prefix": ["team/runs", "team/runs/*"]}}}
    assert objects == {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                       "Resource": "arn:aws:s3:::bkt/team/runs/*"}
    whole = json.loads(checkpoints.access_policy(BucketUrl("bkt")))
    assert "Condition" not in whole["Statement"][0] and whole["Statement"][1]["Resource"] == "arn:aws:s3:::bkt/*"
    assert json.loads(checkpoints.trust_policy())["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def _words(line: str) -> list[str]:
    """What bash makes of shell words (tilde expanded with HOME=/h)."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], env={"HOME": "/h", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout
    return out.split("\0")[:-1]


def test_follow_words_are_quoted_and_let_home_expand():
    plan = MirrorPlan(BucketUrl("b", "p/x"), "eu-west-1", "~/.awsrun/tools/bin/python", "~/.awsrun/bin/m.py",
                      True, every_s=0.5)
    words = checkpoints.follow_words(plan, "runs/it's; rm -rf ~", "~/'.awsrun/jobs'/'w'/pid")
    assert _words(words) == ["/h/.awsrun/tools/bin/python", "/h/.awsrun/bin/m.py", "follow", "--region", "eu-west-1",
                             "--every", "0.5", "--pid-file", "/h/.awsrun/jobs/w/pid", "runs/it's; rm -rf ~", "s3://b/p/x"]


def test_restore_and_tools_steps():
    plan = MirrorPlan(BucketUrl("b"), None, "/usr/bin/python3", "/opt/m.py", False, restore=True)
    step = checkpoints.restore_step(plan, "~/awsrun/my proj/runs/w")
    assert step == ("/usr/bin/python3 /opt/m.py pull s3://b ~/'awsrun/my proj/runs/w' 1>&2 "
                    f"|| exit {checkpoints.EXIT_RESTORE_FAILED}")
    tools = checkpoints.tools_step("--no-index --find-links '/w h'")
    assert "'/w h'" in tools and f"exit {checkpoints.EXIT_TOOLS_FAILED}" in tools
    assert shlex.split(tools)[:3] == ["if", "!", "~/.awsrun/tools/bin/python"]
