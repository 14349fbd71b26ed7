"""What a new user meets: a new submit is a new run, options after SCRIPT, local clusters that tell the
truth, errors with hints (issue 20)."""
from __future__ import annotations

from pathlib import Path

from tests.harness.clusters import job_cluster, local_cluster, ssh_cluster, wait_for  # noqa: F401 (fixtures)
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
