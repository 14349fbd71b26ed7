"""Clusters of several nodes: `up --nodes 3` against the moto endpoint (placement group, the nodes' own
security-group rule, status head first, down, a node that cannot launch), and a torchrun job across two
loopback SSH hosts with gloo on CPU through `awsrun submit --nodes 2`."""
from __future__ import annotations

import json

import pytest

from awsrun.cluster import up
from awsrun.cluster.context import UpRequest
from awsrun.home import Home
from awsrun.job.projects import project_remote_dir
from awsrun.progress import Silent
from awsrun.providers.aws import AwsProvider
from awsrun.providers.aws_errors import CapacityError
from awsrun.settings import Settings
from awsrun.state import State
from tests.test_aws_errors import Injector

CIDR = "203.0.113.7/32"


def ok(result):
    assert result.exit_code == 0, result
    assert "Traceback" not in result.stderr, result
    return result


def live(ec2) -> list[dict]:
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def node_of(instance: dict) -> int:
    return int({t["Key"]: t["Value"] for t in instance["Tags"]}["awsrun:node"])


def awsrun_groups(ec2) -> list[dict]:
    return [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("awsrun-")]


def assert_nothing_left(ec2, aws, home) -> None:
    assert live(ec2) == []
    assert awsrun_groups(ec2) == []
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == []
    assert aws.placement_groups() == {}
    state = State.open(home / "state.db")
    try:
        assert state.clusters() == [] and state.instances() == []
    finally:
        state.close()


# --- up --nodes 3 against moto --------------------------------------------------------------------------

def test_up_three_nodes_in_a_placement_group_status_head_first_and_down(cli, ec2, aws, fleet, awsrun_home):
    aws.serve_placement_groups()
    result = ok(cli("up", "--nodes", "3", "--ssh-cidr", CIDR, "--no-bootstrap", "--instance-type", "c5.large"))
    assert "warning" not in result.stderr, result
    nodes = sorted(live(ec2), key=node_of)
    assert [node_of(i) for i in nodes] == [0, 1, 2]
    assert len({i["Placement"]["AvailabilityZone"] for i in nodes}) == 1
    assert len({i["SubnetId"] for i in nodes}) == 1

    # one cluster placement group, tagged, and every launch asked for it
    (name, group), = aws.placement_groups().items()
    assert group["Strategy"] == "cluster"
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["awsrun:cluster"] == "default"
    requests = aws.launch_requests()
    assert [r.get("Placement.GroupName") for r in requests] == [name] * 3

    # one security group for all three, with the rule that lets the nodes reach each other on every port
    groups = {g["GroupId"] for i in nodes for g in i["SecurityGroups"]}
    assert len(groups) == 1
    (sg,) = ec2.describe_security_groups(GroupIds=list(groups))["SecurityGroups"]
    everyone = [p for p in sg["IpPermissions"] if p["IpProtocol"] == "-1"]
    assert [pair["GroupId"] for p in everyone for pair in p["UserIdGroupPairs"]] == [sg["GroupId"]]
    assert [r["CidrIp"] for p in sg["IpPermissions"] for r in p["IpRanges"]] == [CIDR]

    # status: every node, the head first, each with the private address the others reach it on
    report = json.loads(ok(cli("status", "--json")).stdout)
    (cluster,) = report["clusters"]
    rows = cluster["instances"]
    assert [(r["node"], r["id"]) for r in rows] == [(node_of(i), i["InstanceId"]) for i in nodes]
    assert [r["private_ip"] for r in rows] == [i["PrivateIpAddress"] for i in nodes]
    table = ok(cli("status")).stdout.splitlines()
    assert [line.split("\t")[1] for line in table[1:]] == ["0", "1", "2"]

    down = ok(cli("down", "--yes"))
    assert all(i["InstanceId"] in down.stderr for i in nodes)
    assert_nothing_left(ec2, aws, awsrun_home)


def test_endpoint_that_refuses_placement_groups_launches_without_one_and_says_so(aws, ec2, fleet, tmp_path):
    home = Home(tmp_path / "home").ensure()
    refusing = Injector().error("CreatePlacementGroup", "UnauthorizedOperation",
                                "You are not authorized to perform this operation.", status=403)
    reporter = Silent()
    result = up.up(home, UpRequest(_settings(fleet), nodes=3, bootstrap=False), reporter,
                         aws=refusing)
    assert len(result.launched) == 3 and len(live(ec2)) == 3
    (warning,) = reporter.warnings
    assert warning.startswith("no cluster placement group (your AWS identity may not call CreatePlacementGroup")
    assert "launching the 3 nodes in one zone without one" in warning
    assert [r.get("Placement.GroupName") for r in aws.launch_requests()] == [None] * 3
    assert "placement_group" not in result.cluster.config


class _ThirdLaunchFails(Injector):
    """RunInstances answers the first two launches; every later one gets EC2's capacity error."""

    def _handler(self, operation, code, message, status, times, service):
        inner = super()._handler(operation, code, message, status, None, service)

        def handler(request, **kwargs):
            self.sent[operation] = self.sent.get(operation, 0) + 1
            if self.sent[operation] <= 2:
                return None
            self.sent[operation] -= 1  # counted again inside
            return inner(request, **kwargs)

        return handler


def _settings(fleet, **changes) -> Settings:
    return Settings(**{"ssh_cidr": CIDR, "caller_ip_url": "off", "ssh_timeout": 20.0, "instance_type": "c5.large",
                       "ssh_proxy_command": fleet.proxy_command, **changes})


def _no_capacity() -> Injector:
    return _ThirdLaunchFails().error("RunInstances", "InsufficientInstanceCapacity",
                                     "We currently do not have sufficient c5.large capacity in the Availability "
                                     "Zone you requested", status=500)


def test_a_node_that_cannot_launch_rolls_the_cluster_back_by_default(aws, ec2, fleet, tmp_path):
    aws.serve_placement_groups()
    home = Home(tmp_path / "home").ensure()
    injector = _no_capacity()
    with pytest.raises(CapacityError) as raised:
        up.up(home, UpRequest(_settings(fleet), nodes=3, bootstrap=False), Silent(), aws=injector)
    assert injector.sent["RunInstances"] == 3  # the third node in the cluster's zone, once: no other zone
    message = raised.value.message
    assert message.startswith("node 2 of cluster 'default' could not launch (AWS has no on-demand capacity "
                              "for c5.large in "), message
    assert "2 of the 3 nodes are running" in message and "; rolled back: terminated i-" in message
    assert "--on-partial continue" in raised.value.hint and "--nodes 2" in raised.value.hint
    assert_nothing_left(ec2, aws, home.root)


def test_a_node_that_cannot_launch_can_be_left_out_when_asked(aws, ec2, fleet, tmp_path):
    aws.serve_placement_groups()
    home = Home(tmp_path / "home").ensure()
    asked = []

    def choose(partial):
        asked.append((partial.failed, partial.running, partial.wanted))
        return "continue"

    reporter = Silent()
    request = UpRequest(_settings(fleet), nodes=3, bootstrap=False, on_partial="ask", choose_partial=choose)
    result = up.up(home, request, reporter, aws=_no_capacity())
    assert asked == [(2, 2, 3)]
    assert sorted(node_of(i) for i in live(ec2)) == [0, 1]
    assert [r.node for r in result.instances] == [0, 1]
    (warning,) = reporter.warnings
    assert "going on with 2 node(s), which are billed" in warning and "`awsrun up --nodes 3`" in warning
    clusters_ops_down(home)
    assert_nothing_left(ec2, aws, home.root)


def clusters_ops_down(home: Home) -> None:
    from awsrun.cluster import ops

    ops.down(home, Settings(), Silent(), aws=AwsProvider)


# --- torchrun across two loopback SSH hosts ---------------------------------------------------------------

STEPS = 40
JOB_ARGS = ("jobs/train_stn.py", "--dataset", "mnist5k", "--model", "fcn", "--distortion", "none",
            "--steps", str(STEPS), "--batch-size", "64", "--log-every", "20", "--eval-every", str(STEPS),
            "--ckpt-every", str(STEPS))
# Calibrated on a 2-core CPU (seeds 0 and 1, 60 steps): one process and torchrun with two gloo ranks, which
# split each global batch between them, reached the same test error to the third decimal; with no
# distortion nothing else depends on the rank. 0.02 (20 of the 1,000 test digits) leaves room for the
# different summation order of the all-reduce.
TOLERANCE = 0.02


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


@pytest.fixture
def second_torch_host(torch_host, fleet):
    """A second host with the torch venv: hard links to the first one's (same filesystem, same path as the
    hosts see it, /home/ubuntu/venvs/awsrun; under a second is cheap both ways). Removed afterwards, since
    the fleet's resets keep venvs and other tests expect none on that host."""
    import shutil
    import subprocess

    host = fleet.hosts[0]
    assert host is not torch_host.host
    target = host.home / torch_host.local_venv.relative_to(torch_host.host.home)
    assert not target.exists(), f"{target} is another test's"
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "--reference", str(torch_host.local_venv.parent), str(target.parent)], check=True)
    subprocess.run(["cp", "-al", str(torch_host.local_venv), str(target)], check=True)
    yield host
    host.kill_jobs()
    shutil.rmtree(target)


def _log(host, session: str = "work") -> str:
    path = host.home / ".awsrun" / "jobs" / session / "log"
    return path.read_text() if path.exists() else ""


@pytest.mark.slow
@pytest.mark.timeout(900)  # two torchrun nodes plus a reference run share 2 cores: slow when the box is busy
def test_torchrun_on_two_ssh_hosts_is_one_job_of_world_size_two(torch_host, second_torch_host, fleet, cli, project,
                                                                 tmp_path, job_pythonpath):
    import shutil

    from tests.harness.clusters import make_key, wait_for
    from tests.stn_helpers import REPO, explain, job_env, read_json, run_job

    head, second = second_torch_host, torch_host.host
    key, public = make_key(tmp_path)
    for host in (head, second):
        host.authorize(public)
    (project / "pyproject.toml").write_text("[project]\nname = 'stn'\n")
    shutil.copytree(REPO / "jobs", project / "jobs", ignore=shutil.ignore_patterns("__pycache__", "runs", "data"))

    ok(cli("up", "--host", f"ubuntu@{head.address}:{head.port}", "--host", f"ubuntu@{second.address}:{second.port}",
           "--ssh-key", str(key), "--no-bootstrap"))
    report = json.loads(ok(cli("status", "--json")).stdout)
    assert [(i["node"], i["id"]) for i in report["clusters"][0]["instances"]] == [
        (0, f"{head.address}:{head.port}"), (1, f"{second.address}:{second.port}")]

    port = _free_port()
    started = ok(cli("submit", "--nodes", "2", "--rdzv-port", str(port), "--env", f"PYTHONPATH={job_pythonpath}",
                     "--env", "OMP_NUM_THREADS=1", *JOB_ARGS))
    assert "started job 'work' on 2 nodes of cluster 'default' (1 process(es) each, world size 2, rendezvous at " \
           f"{head.address}:{port})" in started.stderr, started
    jobs_dir = [host.home / ".awsrun" / "jobs" / "work" for host in (head, second)]
    for rank, directory in enumerate(jobs_dir):  # the same command on each node but its rank
        argv = (directory / "argv").read_bytes().split(b"\0")[:-1]
        assert argv[argv.index(b"--node-rank") + 1] == str(rank).encode()
        assert argv[argv.index(b"--rdzv-endpoint") + 1] == f"{head.address}:{port}".encode()
        environment = (directory / "env").read_bytes().split(b"\0")[:-1]  # the job's env, 0600, apart
        assert b"GLOO_SOCKET_IFNAME=lo" in environment and argv[0] == b"/home/ubuntu/venvs/awsrun/bin/python", argv

    # meanwhile: a single process on this machine, the reference
    reference = tmp_path / "single"
    single = run_job(*JOB_ARGS[1:], "--out", str(reference), env=job_env(OMP_NUM_THREADS="1"))
    assert single.returncode == 0, explain(single)

    wait_for(lambda: all((d / "exit_code").exists() for d in jobs_dir), timeout=780, what="both nodes to finish")
    codes = [(d / "exit_code").read_text().strip() for d in jobs_dir]
    assert codes == ["0", "0"], (codes, _log(head)[-3000:], _log(second)[-3000:])

    listing = json.loads(ok(cli("jobs", "--json")).stdout)
    assert [(j["name"], j["state"], j["exit_code"], [n["node"] for n in j["nodes"]]) for j in listing] == [
        ("work", "exited", 0, [0, 1])]
    table = ok(cli("jobs")).stdout
    assert "work\texited 0\t0,1\t" in table, table

    head_log = ok(cli("logs", "work")).stdout          # the head's, by default
    node1_log = ok(cli("logs", "work", "--node", "1")).stdout
    assert "[rank 0/2] started: rank=0 world_size=2" in head_log and "backend=gloo" in head_log, head_log
    assert "[rank 1/2]" not in head_log
    assert "[rank 1/2] started: rank=1 world_size=2" in node1_log, node1_log
    assert "done: test error" in head_log and "done: test error" not in node1_log

    # rank 0 (node 0) wrote the checkpoint and the artifacts; node 1 wrote none
    remote_runs = [host.home / "awsrun" / project_remote_dir("/", project).lstrip("/") / "runs" / "work" for host in (head, second)]
    assert [p.name for p in (remote_runs[0] / "checkpoints").iterdir()] == [f"ckpt-{STEPS:08d}.pt"]
    assert not remote_runs[1].exists() or not any(remote_runs[1].iterdir())
    ok(cli("pull", "work"))
    summary = read_json(project / "runs" / "work" / "summary.json")
    expected = read_json(reference / "summary.json")
    assert (summary["world_size"], summary["steps"], expected["world_size"]) == (2, STEPS, 1)
    assert abs(summary["test_error"] - expected["test_error"]) <= TOLERANCE, (summary, expected)

    ok(cli("down", "--yes"))


def test_job_state_across_nodes_failed_if_any_failed_running_while_any_runs():
    from awsrun.job.jobs import JobStatus
    from awsrun.job.multinode import aggregate

    def status(state, code=None):
        return JobStatus("work", state, code, 1.0, None, None, ["python", "x.py"])

    assert aggregate("work", [(0, status("running")), (1, status("running"))]).state == "running"
    assert aggregate("work", [(0, status("exited", 0)), (1, status("running"))]).state == "running"
    failed = aggregate("work", [(0, status("running")), (1, status("exited", 3))])
    assert (failed.state, failed.exit_code, failed.label) == ("failed", 3, "failed (node 1: exited 3)")
    assert aggregate("work", [(0, status("exited", 0)), (1, status("killed"))]).label == "failed (node 1: killed)"
    assert aggregate("work", [(0, status("killed")), (1, status("killed"))]).state == "killed"
    done = aggregate("work", [(0, status("exited", 0)), (1, status("exited", 0))])
    assert (done.state, done.label) == ("exited", "exited 0")


def test_torchrun_words_and_rendezvous_builders():
    from awsrun.job.multinode import (
        endpoint,
        gpus_per_node,
        node_env,
        rdzv_port,
        torchrun_words,
    )

    assert torchrun_words(nnodes=3, nproc_per_node=8, node_rank=2, endpoint="10.0.0.5:29511", rdzv_id="work") == [
        "-m", "torch.distributed.run", "--nnodes", "3", "--nproc-per-node", "8", "--node-rank", "2",
        "--rdzv-backend", "static", "--rdzv-endpoint", "10.0.0.5:29511", "--rdzv-id", "work"]
    assert endpoint("fd00::1", 29500) == "[fd00::1]:29500"
    assert node_env("127.0.0.2") == {"GLOO_SOCKET_IFNAME": "lo"} and node_env("10.0.0.5") == {}
    assert 29500 <= rdzv_port("work") < 29900 and rdzv_port("work") == rdzv_port("work")
    assert (gpus_per_node("p3.8xlarge"), gpus_per_node("c5.large"), gpus_per_node(None)) == (4, 1, 1)


def test_nodes_bootstrap_in_parallel_with_lines_per_node_and_a_failure_names_its_node(tmp_path):
    import threading
    from contextlib import contextmanager

    from awsrun.cluster import nodes as cluster_nodes
    from awsrun.cluster.context import Run
    from awsrun.errors import RemoteError
    from awsrun.state import ClusterRecord, InstanceRecord

    lines: list[str] = []

    class Phase:
        def update(self, detail: str) -> None:
            lines.append(detail)

    class Reporter(Silent):
        @contextmanager
        def phase(self, label: str):
            lines.append(label)
            yield Phase()

    home = Home(tmp_path / "home").ensure()
    run = Run(home, Settings(), State.open(home.state_db), Reporter(), aws=None)
    records = [InstanceRecord(f"i-{n}", "default", "running", node=n) for n in range(3)]
    connected: list[str] = []
    together = threading.Barrier(3, timeout=10)  # passes only when all three run at once

    def bootstrap_node(remote, settings, *, instance_type, log_path, on_line, reconnect):
        together.wait()
        on_line(f"==> venv on {remote}")
        if remote == "conn-i-1":
            raise RemoteError("bootstrap step venv failed")

    def connect(record):
        connected.append(record.id)
        return f"conn-{record.id}"

    with pytest.raises(RemoteError) as raised:
        cluster_nodes.bootstrap_parallel(run, ClusterRecord("default", "aws"), records, bootstrap_node, connect)
    run.state.close()
    assert raised.value.message == "node 1 (i-1): bootstrap step venv failed"
    assert connected == ["i-0", "i-1", "i-2"]  # one connection each, made before the threads start
    assert lines[0].startswith("bootstrapping 3 nodes in parallel (logs: ")
    assert sorted(lines[1:]) == [f"node {n}: ==> venv on conn-i-{n}" for n in range(3)]
