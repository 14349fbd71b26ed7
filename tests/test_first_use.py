"""What a new user meets: a new submit is a new run, options after SCRIPT, local clusters that tell the
truth, errors with hints (issue 20)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness.clusters import (  # noqa: F401 (fixtures)
    job_cluster,
    local_cluster,
    ssh_cluster,
    wait_for,
)
from tests.test_jobs_e2e import TICKER, make_project

RESUMER = (
    "import os\n"
    "out = os.environ['AWSRUN_OUTPUT_DIR']\n"
    "ckpt = os.path.join(out, 'ckpt')\n"
    "if os.path.exists(ckpt):\n"
    "    print('resuming from', open(ckpt).read())\n"
    "else:\n"
    "    print('fresh run')\n"
    "open(ckpt, 'w').write(str(len(os.listdir(os.path.dirname(out)))))\n"
)


def test_a_new_submit_starts_a_fresh_run_and_keeps_the_previous_one_aside(cli, project, job_cluster):
    make_project(project, resumer=RESUMER)
    first = cli("submit", "--follow", "resumer.py")
    assert first.exit_code == 0, first
    assert first.stdout == "fresh run\n"
    assert "kept as" not in first.stderr

    second = cli("submit", "--follow", "resumer.py")
    assert second.exit_code == 0, second
    assert second.stdout == "fresh run\n", second
    assert "the previous run's runs/work is kept as runs/work.1" in second.stderr
    runs = job_cluster.project(project) / "runs"
    assert (runs / "work.1" / "ckpt").read_text() == "1"

    resumed = cli("submit", "--follow", "--resume", "resumer.py")
    assert resumed.exit_code == 0, resumed
    assert resumed.stdout.startswith("resuming from"), resumed
    assert "kept as" not in resumed.stderr

    third = cli("submit", "--follow", "resumer.py")
    assert "kept as runs/work.2" in third.stderr and third.stdout == "fresh run\n"
    assert sorted(p.name for p in runs.iterdir()) == ["work", "work.1", "work.2"]


ECHO = "import json, sys; print(json.dumps(sys.argv[1:]))"


def test_submit_options_after_script_are_named_and_a_double_dash_passes_them_on_quietly(cli, project, local_cluster):
    make_project(project, echo=ECHO)
    stray = cli("submit", "--follow", "echo.py", "--smoke", "--name", "tty", "--env=A=1")
    assert stray.exit_code == 0, stray
    assert stray.stdout == '["--smoke", "--name", "tty", "--env=A=1"]\n'
    warning = [line for line in stray.stderr.splitlines() if line.startswith("warning:")]
    assert warning == ["warning: --name, --env after echo.py go to the script, not to awsrun submit: put them "
                       "before echo.py, or write `awsrun submit echo.py -- ARGS...` to pass them on on purpose"]

    meant = cli("submit", "--follow", "echo.py", "--", "--name", "tty")
    assert meant.exit_code == 0, meant
    assert meant.stdout == '["--name", "tty"]\n'
    assert "warning" not in meant.stderr


def test_down_on_a_local_cluster_names_its_running_jobs_refuses_or_ends_them(cli, project, local_cluster):
    make_project(project, ticker=TICKER)
    assert cli("submit", "ticker.py").exit_code == 0
    refused = cli("down")  # no terminal to ask on
    assert refused.exit_code == 2, refused
    assert refused.stderr.splitlines()[0] == (
        "error: `awsrun down` would forget cluster 'default' (this machine is left alone) and end its running "
        "job 'work': confirm with --yes")
    assert refused.stderr.splitlines()[1] == "  hint: awsrun down --yes --cluster default"
    assert local_cluster.sessions() == ["work"]

    gone = cli("down", "--yes")
    assert gone.exit_code == 0, gone
    assert "ended job 'work'" in gone.stderr and "cloud" not in gone.stderr
    assert local_cluster.sessions() == []
    assert (local_cluster.job("work") / "killed_at").exists()


def test_down_without_running_jobs_says_the_same_in_the_refusal_and_the_prompt(cli, project, local_cluster):
    refused = cli("down")
    assert refused.exit_code == 2, refused
    assert "would forget cluster 'default' (this machine is left alone): confirm" in refused.stderr
    assert "terminate" not in refused.stderr
    gone = cli("down", "--yes")
    assert gone.exit_code == 0, gone
    assert gone.stderr.splitlines()[-1] == ("cluster 'default' is forgotten: awsrun launched nothing for it, "
                                            "so nothing was terminated")


def test_up_on_a_local_cluster_says_it_is_this_machine_and_how_to_get_an_ec2_one(cli):
    first = cli("up", "--local", "--no-bootstrap")
    assert first.exit_code == 0, first
    assert "warning" not in first.stderr  # jobs using this Python's torch is the expected case, no fault
    assert "cluster 'default' (this machine) is ready" in first.stderr
    # this machine is not stopped by awsrun (`stop` refuses it): the line names only what works
    assert "`awsrun down` forgets it when you are done." in first.stderr and "awsrun stop" not in first.stderr

    again = cli("up", "--no-bootstrap")  # no --local: the default cluster is still this machine
    assert again.exit_code == 0, again
    assert ("cluster 'default' is this machine (made by `awsrun up --local`), not EC2; for an EC2 cluster: "
            "`awsrun up --cluster NAME`") in again.stderr
    assert "cluster 'default' (this machine) is ready" in again.stderr
    assert cli("down", "--yes").exit_code == 0


OFFLINE = {"AWSRUN_CALLER_IP_URL": "http://127.0.0.1:9/"}  # nothing listens there: the lookup fails


def test_up_checks_region_and_credentials_before_looking_up_the_callers_address(cli):
    no_region = cli("up", env={**OFFLINE, "AWS_REGION": "", "AWS_DEFAULT_REGION": ""})
    assert no_region.exit_code == 2, no_region
    assert no_region.stderr.startswith("error: no AWS region is configured"), no_region

    no_credentials = cli("up", env={**OFFLINE, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                                    "AWS_SESSION_TOKEN": ""})
    assert no_credentials.exit_code != 0, no_credentials
    error = [line for line in no_credentials.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "credentials" in error[0], no_credentials
    assert "127.0.0.1:9" not in no_credentials.stderr


def test_every_error_a_new_user_meets_has_a_hint(cli, project):
    make_project(project)
    cases = {
        ("submit", "nonexistent.py"): (7, "error: no script 'nonexistent.py' in "),
        ("up", "--frob"): (2, "error: No such option '--frob'."),
        ("frob",): (2, "error: No such command 'frob'."),
    }
    for args, (code, first) in cases.items():
        result = cli(*args)
        lines = result.stderr.splitlines()
        assert (result.exit_code, len(lines)) == (code, 2), result
        assert lines[0].startswith(first) and lines[1].startswith("  hint: "), result
    assert cli("up", "--frob").stderr.splitlines()[1] == "  hint: `awsrun up --help` lists its options"
    assert cli("frob").stderr.splitlines()[1] == "  hint: `awsrun --help` lists its commands"

    for name, value, hint in [("AWSRUN_VOLUME_GB", "abc", "export AWSRUN_VOLUME_GB=100"),
                              ("AWSRUN_SPOT", "maybe", "export AWSRUN_SPOT=true")]:
        result = cli("config", env={name: value})
        assert result.exit_code == 2, result
        assert result.stderr.splitlines() == [
            f"error: {name}: {name[7:].lower()} must be {'a whole number' if value == 'abc' else 'true or false'}, "
            f"got {value!r}",
            f"  hint: e.g. `{hint}`, or `unset {name}` for the default"]
    (project / "awsrun.toml").write_text("volume_gb = 'big'\n")
    in_file = cli("config")
    assert in_file.stderr.splitlines()[1] == ("  hint: fix `volume_gb` in awsrun.toml, e.g. `volume_gb = 100` "
                                              "(`awsrun config` shows every setting)"), in_file


def test_ctrl_c_on_logs_follow_is_no_error_and_attach_to_a_typo_suggests_the_nearest_job(cli, project, local_cluster):
    make_project(project, ticker=TICKER)
    assert cli("submit", "--name", "train-a", "ticker.py").exit_code == 0
    follower = cli.popen("logs", "-f", "train-a", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout.readline().startswith(b"tick ")
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 130
    assert err.decode().splitlines() == ["stopped following; job 'train-a' goes on: `awsrun logs train-a -f` "
                                         "follows it again, `awsrun kill train-a` stops it"]

    typo = cli("attach", "train_a")
    assert typo.exit_code == 7, typo
    assert typo.stderr.splitlines() == ["error: no job named 'train_a' on cluster 'default'",
                                        "  hint: did you mean 'train-a'? `awsrun jobs` lists them all"]
    far = cli("attach", "zzz")
    assert far.stderr.splitlines()[1] == "  hint: `awsrun jobs` lists them ('train-a')"
    assert cli("kill", "--force", "train-a").exit_code == 0


def test_doctor_without_a_region_lists_it_first_and_still_says_whether_credentials_exist(cli):
    no_region = {"AWS_REGION": "", "AWS_DEFAULT_REGION": ""}
    found = cli("doctor", "--json", env=no_region)
    assert found.exit_code == 8, found
    checks = json.loads(found.stdout)["checks"]
    assert [c["name"] for c in checks[:3]] == ["endpoint", "region", "credentials"]
    assert (checks[1]["ok"], checks[1]["detail"]) == (False, "no AWS region set")
    assert checks[2]["detail"] == "found (env) but not verified: STS needs a region"

    missing = cli("doctor", "--json", env={**no_region, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                                           "AWS_SESSION_TOKEN": ""})
    credentials = json.loads(missing.stdout)["checks"][2]
    assert credentials["detail"] == "no AWS credentials found (and no region set: STS was not asked)"
    assert "aws configure" in credentials["fix"]


NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}


def test_prices_without_credentials_or_region_shows_the_dated_list_prices_and_says_why_no_spot(cli):
    from awsrun.setup import catalog

    shipped = catalog.load_catalog()
    offline = cli("prices", "--gpu", "T4", "--json", env={**NO_CREDENTIALS, "AWS_REGION": "", "AWS_DEFAULT_REGION": ""})
    assert offline.exit_code == 0, offline
    table = json.loads(offline.stdout)
    assert (table["region"], table["live_spot_prices"]) == ("us-east-1", False)
    assert table["on_demand_prices_as_of"] == shipped.prices_as_of
    assert table["on_demand_prices_origin"] == shipped.prices_origin
    assert {t["instance_type"]: t["on_demand_usd"] for t in table["types"]} == {
        name: catalog.on_demand_price(name, "us-east-1") for name in ("g4dn.xlarge", "g4dn.2xlarge", "g4dn.12xlarge")}
    assert all(t["spot_usd"] == [] for t in table["types"])
    assert table["notes"][0].startswith("no spot prices: live spot prices need AWS credentials")
    assert "no AWS region set: list prices for us-east-1" in table["notes"][1]

    readable = cli("prices", "--region", "eu-west-1", env=NO_CREDENTIALS)
    assert readable.exit_code == 0, readable
    assert readable.stdout.splitlines()[0] == (f"# eu-west-1: on-demand list prices as of {shipped.prices_as_of} "
                                               f"({shipped.prices_origin}); no spot prices")
    assert "credentials" in readable.stderr and "error" not in readable.stderr


def test_help_shows_each_commands_summary_whole(cli):
    result = cli("--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result
    listing = result.stdout.split("Commands:\n", 1)[1]
    summaries: dict[str, str] = {}
    for line in listing.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, _, text = line.strip().partition(" ")
            summaries[name] = text.strip()
        elif line.strip():
            summaries[name] += " " + line.strip()
    assert {"submit", "ssh", "tunnel", "up", "down"} <= set(summaries)
    cut = {name: text for name, text in summaries.items() if text.endswith("...") or not text.endswith((".", ")"))}
    assert cut == {}
    assert summaries["ssh"] == "A shell on the cluster's head node, or `awsrun ssh -- CMD...` to run one command."
    assert summaries["submit"] == "Sync the project and run SCRIPT [ARGS] in a detached tmux session on the cluster."


def test_status_cached_imports_none_of_the_cloud_code(cli):
    """What keeps `status --cached` near `import click` (bench/cli_startup.py measures it)."""
    assert cli("up", "--local", "--no-bootstrap").exit_code == 0
    probe = ("import sys; from awsrun.cli import cli; import click.testing as t; "
             "r = t.CliRunner().invoke(cli, ['status', '--cached']); assert r.exit_code == 0, r.output; "
             "print(sorted(m for m in sys.modules if m in ('awsrun.cluster.up', 'awsrun.cluster.ec2', 'awsrun.cluster.autostop', "
             "'awsrun.cluster.keys', 'awsrun.cluster.access') or m.startswith(('awsrun.providers', 'boto3', 'botocore', 'paramiko'))))")
    out = subprocess.run([sys.executable, "-c", probe], env=cli.environment(), cwd=cli.cwd, capture_output=True,
                         text=True)
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out
