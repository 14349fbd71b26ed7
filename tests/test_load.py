"""Load, on the harness: 50 jobs on one instance listed in one round trip; 200 instances in the account
through `status` (adopted, paginated, still right after some go); a 10,000-file project synced, then
resynced after one file changed with the bytes on the wire (counted at the ProxyCommand) near the bytes
changed. bench/load.py prints the same figures bigger (1 GB) and timed."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from awsrun.home import Home
from awsrun.job import jobs, submission
from awsrun.settings import Settings
from tests.harness.clusters import ssh_cluster, wait_for  # noqa: F401  (fixture)
from tests.harness.ec2_endpoint import image_ids

CUTPROXY = Path(__file__).parent / "harness" / "cutproxy.py"


class CountingRemote:
    """A Remote that counts its round trips (commands run, files put or got) and passes them on."""

    def __init__(self, remote):
        self._remote = remote
        self.round_trips = 0

    def run(self, *args, **kwargs):
        self.round_trips += 1
        return self._remote.run(*args, **kwargs)

    def put_bytes(self, *args, **kwargs):
        self.round_trips += 1
        return self._remote.put_bytes(*args, **kwargs)

    def get_bytes(self, *args, **kwargs):
        self.round_trips += 1
        return self._remote.get_bytes(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._remote, name)


# --- 50 jobs ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fifty_jobs_are_listed_in_one_round_trip(cli, project, ssh_cluster, awsrun_home):
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "job.py").write_text("import sys, time\ncode = int(sys.argv[1])\n"
                                    "time.sleep(3600 if code == 9 else 0)\nsys.exit(code)\n")
    host = jobs.open_host(Home(awsrun_home), Settings())
    try:
        for index in range(50):
            submission.submit(host, submission.SubmitRequest(project, "job.py", (str(index % 10),), f"job{index:02d}"))
        wait_for(lambda: len(list(ssh_cluster.jobs_dir.glob("*/exit_code"))) == 45, timeout=60,
                 what="the 45 short jobs to end")
        counting = CountingRemote(host.remote)
        host.remote = counting
        listing = jobs.list_jobs(host)
        assert counting.round_trips == 1
    finally:
        host.close()
    assert sorted(job.name for job in listing) == [f"job{index:02d}" for index in range(50)]
    labels = {job.name: job.label for job in listing}
    assert all(labels[f"job{i:02d}"] == ("running" if i % 10 == 9 else f"exited {i % 10}") for i in range(50))

    shown = cli("jobs", "--json")  # and through the CLI, the same 50
    assert shown.exit_code == 0, shown
    assert len(json.loads(shown.stdout)) == 50


# --- 200 instances ---------------------------------------------------------------------------------------

def launch_tagged(ec2, count: int, cluster: str, per_call: int = 10) -> list[str]:
    """`count` instances tagged as awsrun's, `per_call` to a RunInstances call (a reservation each)."""
    import boto3

    owner = boto3.client("sts", region_name="us-east-1", endpoint_url=ec2.meta.endpoint_url) \
        .get_caller_identity()["Arn"]
    tags = [{"Key": "awsrun:cluster", "Value": cluster}, {"Key": "awsrun:owner", "Value": owner},
            {"Key": "awsrun:node", "Value": "0"}]
    ids = []
    for _ in range(count // per_call):
        reply = ec2.run_instances(ImageId=image_ids()[0], InstanceType="g4dn.xlarge", MinCount=per_call,
                                  MaxCount=per_call, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        ids += [i["InstanceId"] for i in reply["Instances"]]
    return ids


class PagedAws:
    """Providers whose DescribeInstances asks for small pages (EC2 pages big answers; moto does when asked,
    counting reservations: 5 reservations of 10 instances a page here)."""

    def __init__(self):
        self.pages = 0

    def __call__(self, region):
        from awsrun.providers.aws import AwsProvider

        provider = AwsProvider(region)

        def small_pages(params, **_):
            if "InstanceIds" not in params:
                params.setdefault("MaxResults", 5)

        def count(**_):
            self.pages += 1

        events = provider._session.events  # the session's: clients made later (quick()) get them too
        events.register("provide-client-params.ec2.DescribeInstances", small_pages)
        events.register("before-call.ec2.DescribeInstances", count)
        return provider


@pytest.mark.slow
def test_two_hundred_instances_status_paginates_and_stays_right(cli, ec2, awsrun_home):
    from awsrun.cluster.status import status

    ids = launch_tagged(ec2, 200, "big")
    paged = PagedAws()
    report = status(Home(awsrun_home), Settings(), aws=paged)  # in process: pages counted
    assert paged.pages >= 4  # 200 instances in pages of 50: every page was read, and counted
    assert len(report.orphans) == 200 and all(o.adopted for o in report.orphans)
    (big,) = report.clusters
    assert sorted(i.id for i in big.instances) == sorted(ids)

    ec2.terminate_instances(InstanceIds=ids[:20])
    shown = cli("status", "--json")  # the CLI, as a user runs it: the terminated ones are gone
    assert shown.exit_code == 0, shown
    rows = [i for c in json.loads(shown.stdout)["clusters"] for i in c["instances"]]
    assert sorted(r["id"] for r in rows) == sorted(ids[20:])
    assert {r["state"] for r in rows} == {"running"}


# --- 10,000 files ----------------------------------------------------------------------------------------

@pytest.fixture
def fast_project(tmp_path):
    """A project directory in memory when the machine has /dev/shm: creating 10,000 files on a slow disk
    costs seconds that measure the disk, not awsrun."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="awsrun-load-", dir="/dev/shm" if os.path.isdir("/dev/shm") else tmp_path))
    (base / "project").mkdir()
    yield base / "project"
    shutil.rmtree(base, ignore_errors=True)


def make_many_files(project: Path, count: int, size: int) -> None:
    blob = os.urandom(count * size)
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "train.py").write_text("print('ok')\n")
    for index in range(count):
        directory = project / f"pkg{index % 50}" / f"sub{index % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index}.bin").write_bytes(blob[index * size:(index + 1) * size])


def wire_totals(directory: Path) -> tuple[int, int]:
    """(up, down) bytes of every connection the counting proxy has seen so far."""
    pairs = [tuple(map(int, p.read_text().split())) for p in directory.iterdir() if not p.name.startswith(".")]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


@pytest.mark.slow
def test_ten_thousand_files_sync_then_one_change_resyncs_near_its_size(cli, fast_project, ssh_cluster, fleet,
                                                                      tmp_path):
    project = fast_project
    count, size = 10_000, 2_000
    make_many_files(project, count, size)
    counts = tmp_path / "wire"
    counts.mkdir()
    cli.env["AWSRUN_SSH_PROXY_COMMAND"] = (shlex.join([sys.executable, str(CUTPROXY), "--count", str(counts), "--"])
                                           + " " + fleet.proxy_command)
    first = cli("submit", "--json", "train.py", timeout=300, cwd=project)
    assert first.exit_code == 0, first
    report = json.loads(first.stdout)["sync"]
    assert report["files_sent"] == count + 2 and report["bytes_raw"] >= count * size
    first_totals = wire_totals(counts)
    assert first_totals[0] >= count * size  # random bytes: the whole project went

    wait_for(lambda: (ssh_cluster.job("work") / "exit_code").exists(), timeout=60, what="the first job to end")
    changed = project / "pkg3" / "sub3" / "f3.bin"
    changed.write_bytes(os.urandom(size))
    again = cli("submit", "--json", "train.py", timeout=300, cwd=project)
    assert again.exit_code == 0, again
    report = json.loads(again.stdout)["sync"]
    assert (report["files_sent"], report["deleted"], report["unchanged"]) == (1, 0, count + 1)
    assert report["bytes_raw"] == size
    assert report["bytes_sent"] < size + 64 * count  # the file and rsync's file list (under 64 bytes a file)
    up, down = (now - before for now, before in zip(wire_totals(counts), first_totals))
    # on the wire, both ways: SSH's handshake and awsrun's helper programs (tens of KB), the file, and at
    # most the instance's file list (under 64 bytes a file): far from the project's 20 MB
    assert up + down < size + 64 * count + 100_000, (up, down)
    assert (ssh_cluster.project(project) / "pkg3" / "sub3" / "f3.bin").read_bytes() == changed.read_bytes()
