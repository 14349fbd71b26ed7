"""`up` checks a new instance's host key against the fingerprints cloud-init prints on the boot console,
reading the console again (Latest=True) for a bounded time while they are not there yet; without them it
says in one warning line that the key is trusted on first use, and records that. The real CLI against
moto's EC2 endpoint, whose console shows the loopback hosts' fingerprints as the harness decides."""
from __future__ import annotations

import base64

from awsrun.remote.hostkeys import fingerprint
from awsrun.state import State
from tests.test_up_e2e import live, ok

TOFU = "trusted on first use"


def instance_record(home, instance_id: str):
    state = State.open(home / "state.db")
    try:
        return next(r for r in state.instances("default") if r.id == instance_id)
    finally:
        state.close()


def test_up_reads_the_console_again_until_the_fingerprints_appear_and_checks_the_key(cli, ec2, aws, fleet,
                                                                                     awsrun_home):
    aws.withhold_host_keys(2)
    result = ok(cli("up", "--no-bootstrap", "--ssh-cidr", "203.0.113.7/32"))
    (instance,) = live(ec2)
    instance_id = instance["InstanceId"]
    reads = [r for r in aws.console_requests() if r["InstanceId"] == instance_id]
    assert len(reads) >= 3 and all(r["Latest"] is True for r in reads), reads
    assert TOFU not in result.stderr, result
    record = instance_record(awsrun_home, instance_id)
    bound = fleet.host_of(instance_id).host_public_key.split()[1]
    assert fingerprint(base64.b64decode(bound)) in record.extra["host_key_fingerprints"]
    assert "host_key" not in record.extra
    ok(cli("down", "--yes"))


def test_up_without_fingerprints_warns_once_and_records_trust_on_first_use(cli, ec2, aws, fleet, awsrun_home):
    aws.withhold_host_keys(None)
    result = ok(cli("up", "--no-bootstrap", "--ssh-cidr", "203.0.113.7/32", env={"AWSRUN_SSH_TIMEOUT": "4"}))
    (instance,) = live(ec2)
    instance_id = instance["InstanceId"]
    warnings = [line for line in result.stderr.splitlines() if TOFU in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and instance_id in warnings[0], result
    assert len([r for r in aws.console_requests() if r["InstanceId"] == instance_id]) >= 2  # retried, bounded
    assert instance_record(awsrun_home, instance_id).extra["host_key"] == TOFU

    again = ok(cli("up", "--no-bootstrap", "--ssh-cidr", "203.0.113.7/32"))  # pinned now: nothing to warn
    assert TOFU not in again.stderr
    ok(cli("down", "--yes"))
