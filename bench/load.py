"""The load figures of issue 12, each through the real CLI (a fresh `python -m awsrun` process, as typed):

    sync    a 10,000-file project (default 1 GB: nine in ten files Python-like text, one in ten random
            bytes), first `awsrun submit` and a resubmit after one file changed: wall time, the
            payload awsrun reports, and the bytes on the wire both ways (counted at the ProxyCommand)
    jobs    50 jobs on one instance: `awsrun jobs --json` wall time (median of N), and the round trips
            of the listing (counted on the Remote, in process)
    status  200 awsrun instances in the account (moto's EC2 endpoint): `awsrun status --json`, the first
            (adopting all 200) and then steady state (median of N)

On one loopback sshd host of the test harness and moto in this process. Needs root, as the tests do.

    python bench/load.py [--gb 1.0] [--files 10000] [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from loopback_host import loopback, make_project  # noqa: E402

CUTPROXY = REPO / "tests" / "harness" / "cutproxy.py"
PROXY = REPO / "tests" / "harness" / "proxy.py"  # loopback addresses pass straight through


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[2:5]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def wire(directory: Path) -> tuple[int, int]:
    pairs = [tuple(map(int, p.read_text().split())) for p in directory.iterdir() if not p.name.startswith(".")]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def mb(count: float) -> str:
    return f"{count / 1e6:,.1f} MB" if count >= 100_000 else f"{count / 1e3:,.1f} KB"


def bench_sync(box, scratch: Path, files: int, total: int) -> None:
    project = make_project(scratch / "project", files, total)
    counts = scratch / "wire"
    counts.mkdir()
    env = box.env()
    env["AWSRUN_SSH_PROXY_COMMAND"] = shlex.join([sys.executable, str(CUTPROXY), "--count", str(counts), "--",
                                                  sys.executable, str(PROXY), "/nonexistent"]) + " %h %p %r"
    argv = box.awsrun("submit", "--json", "--name", "sync", "jobs/quick.py")
    first_s, first = timed(argv, env, project)
    after_first = wire(counts)
    edited = project / "pkg3" / "mod3.py"
    edited.write_text(edited.read_text() + "# one edit\n")
    time.sleep(1.0)  # the first job ends (its name is free again)
    again_s, again = timed(argv, env, project)
    after_again = wire(counts)
    one, two = json.loads(first)["sync"], json.loads(again)["sync"]
    up, down = after_again[0] - after_first[0], after_again[1] - after_first[1]
    print(f"\nsync: {files:,} files, {mb(one['bytes_raw'])} (loopback sshd, `awsrun submit`, fresh process)")
    print(f"  first submit   {first_s:7.2f} s   {one['files_sent']:,} files, payload {mb(one['bytes_sent'])}, "
          f"wire up {mb(after_first[0])} / down {mb(after_first[1])}")
    print(f"  one changed    {again_s:7.2f} s   {two['files_sent']} file of {edited.stat().st_size:,} B, payload "
          f"{mb(two['bytes_sent'])}, wire up {mb(up)} / down {mb(down)}")


def bench_jobs(box, scratch: Path, runs: int) -> None:
    from awsrun.home import Home
    from awsrun.job import jobs, submission
    from awsrun.settings import Settings

    project = scratch / "jobs-project"
    (project / "jobs").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'jobs'\n")
    (project / "jobs" / "quick.py").write_text("print('done')\n")
    os.environ["AWSRUN_HOME"] = str(box.awsrun_home)
    host = jobs.open_host(Home(box.awsrun_home), Settings())
    trips = {"n": 0}
    run = host.remote.run

    def counted(*args, **kwargs):
        trips["n"] += 1
        return run(*args, **kwargs)

    try:
        for index in range(50):
            submission.submit(host, submission.SubmitRequest(project, "jobs/quick.py", (), f"job{index:02d}"))
        host.remote.run = counted
        start = time.perf_counter()
        listed = jobs.list_jobs(host)
        in_process = time.perf_counter() - start
    finally:
        host.close()
    samples, count = [], 0
    for _ in range(runs):
        seconds, out = timed(box.awsrun("jobs", "--json"), box.env(), project)
        samples.append(seconds)
        count = len(json.loads(out))
    print(f"\njobs: {len(listed)} jobs on one instance (loopback sshd)")
    print(f"  `awsrun jobs --json`      {statistics.median(samples) * 1000:7.0f} ms (median of {runs}, fresh process, "
          f"{count} listed)")
    print(f"  list_jobs, connection open {in_process * 1000:6.0f} ms, {trips['n']} round trip")


def bench_status(scratch: Path, runs: int) -> None:
    os.environ.setdefault("MOTO_AMIS_PATH", str(REPO / "tests" / "harness" / "data" / "amis.json"))
    from tests.harness.cli import AWS_ENV

    os.environ.update(AWS_ENV)
    from tests.harness.ec2_endpoint import Ec2Endpoint, image_ids

    endpoint = Ec2Endpoint.start()
    try:
        import boto3

        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint.url)
        owner = boto3.client("sts", region_name="us-east-1", endpoint_url=endpoint.url).get_caller_identity()["Arn"]
        tags = [{"Key": "awsrun:cluster", "Value": "big"}, {"Key": "awsrun:owner", "Value": owner}]
        for _ in range(20):
            ec2.run_instances(ImageId=image_ids()[0], InstanceType="g4dn.xlarge", MinCount=10, MaxCount=10,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        home = scratch / "status-home"
        home.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWSRUN_")}
        env.update(AWS_ENV, AWS_ENDPOINT_URL=endpoint.url, AWSRUN_HOME=str(home), PYTHONPATH=str(REPO),
                   AWSRUN_CALLER_IP_URL="off")
        first, out = timed([sys.executable, "-m", "awsrun", "status", "--json"], env, scratch)
        rows = sum(len(c["instances"]) for c in json.loads(out)["clusters"])
        samples = [timed([sys.executable, "-m", "awsrun", "status", "--json"], env, scratch)[0] for _ in range(runs)]
    finally:
        endpoint.stop()
    print("\nstatus: 200 awsrun instances in the account (moto EC2 endpoint on loopback)")
    print(f"  first `awsrun status --json` {first * 1000:6.0f} ms (adopts all {rows})")
    print(f"  then                         {statistics.median(samples) * 1000:6.0f} ms (median of {runs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the synced project")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip", action="append", default=[], choices=["sync", "jobs", "status"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="awsrun-load-") as scratch_dir:
        scratch = Path(scratch_dir)
        if "sync" not in args.skip or "jobs" not in args.skip:
            with loopback() as box:
                if "sync" not in args.skip:
                    bench_sync(box, scratch, args.files, int(args.gb * 1e9))
                if "jobs" not in args.skip:
                    bench_jobs(box, scratch, args.runs)
        if "status" not in args.skip:
            bench_status(scratch, args.runs)


if __name__ == "__main__":
    main()
