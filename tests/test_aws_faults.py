"""The EC2 endpoint failing some calls (5xx, RequestLimitExceeded), on top of what test_aws_errors shows
(each error's message, throttling after botocore's retries): a transient 5xx is retried and the launch is
still one instance; a lasting one stops after the bounded attempts with one line and leaves no instance
and no placeholder; a throttled terminate or describe leaves the state as it was, and the re-run
completes. Errors are injected at the boto3 boundary (before-send), so botocore's own retries run."""
from __future__ import annotations

import pytest

from awsrun.cluster import ops
from awsrun.cluster.status import status
from awsrun.errors import CloudError
from awsrun.progress import Silent
from awsrun.providers import aws_errors
from awsrun.providers.aws import AwsProvider
from tests.test_aws_errors import (  # noqa: F401
    Injector,
    home,
    live_instances,
    recorded_instances,
    run_up,
    settings,
)


def one_line(error) -> str:
    assert "\n" not in error.message and "\n" not in (error.hint or "")
    return error.message


@pytest.mark.slow
def test_a_transient_5xx_on_launch_is_retried_and_launches_one_instance(aws, ec2, home, fleet):
    aws_ = Injector(max_attempts=4).error("RunInstances", "InternalError", "An internal error has occurred",
                                          status=500, times=2)
    result = run_up(home, aws_, ssh_proxy_command=fleet.proxy_command)
    assert aws_.sent["RunInstances"] == 3  # two 500s, then through
    (instance,) = live_instances(ec2)
    assert result.launched == (instance["InstanceId"],)
    assert [r.id for r in recorded_instances(home)] == [instance["InstanceId"]]  # no placeholder left


def test_a_lasting_5xx_stops_after_the_bounded_attempts_and_leaves_nothing(aws, ec2, home):
    aws_ = Injector(max_attempts=3).error("RunInstances", "Unavailable", "The service is unavailable", status=503)
    with pytest.raises(CloudError) as raised:
        run_up(home, aws_)
    assert aws_.sent["RunInstances"] == 3  # bounded: never retried forever
    assert one_line(raised.value) == "AWS RunInstances failed: Unavailable: The service is unavailable"
    assert recorded_instances(home) == [] and live_instances(ec2) == []


@pytest.mark.slow
def test_throttled_status_and_terminate_keep_the_records_and_the_reruns_complete(aws, ec2, home, fleet):
    run_up(home, AwsProvider, ssh_proxy_command=fleet.proxy_command)
    (instance,) = live_instances(ec2)
    before = recorded_instances(home)
    describe = Injector(max_attempts=2).error("DescribeInstances", "RequestLimitExceeded",
                                              "Request limit exceeded.", status=503)
    with pytest.raises(aws_errors.ThrottledError):
        status(home, settings(), aws=describe)
    assert recorded_instances(home) == before
    assert [i.id for c in status(home, settings(), aws=AwsProvider).clusters for i in c.instances] == \
        [instance["InstanceId"]]

    terminate = Injector(max_attempts=2).error("TerminateInstances", "RequestLimitExceeded",
                                               "Request limit exceeded.", status=503)
    with pytest.raises(aws_errors.ThrottledError) as raised:
        ops.down(home, settings(), Silent(), aws=terminate)
    assert terminate.sent["TerminateInstances"] == 2
    assert one_line(raised.value) == "AWS throttled awsrun's requests (RequestLimitExceeded) after 2 attempts"
    assert [r.id for r in recorded_instances(home)] == [instance["InstanceId"]]  # still known: down can finish
    assert [i["InstanceId"] for i in live_instances(ec2)] == [instance["InstanceId"]]

    result = ops.down(home, settings(), Silent(), aws=AwsProvider)
    assert result.terminated == (instance["InstanceId"],)
    assert recorded_instances(home) == [] and live_instances(ec2) == []
