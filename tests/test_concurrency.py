"""Two awsrun processes at once, as a busy user runs them: two `up`s of one cluster, two `submit --name S`,
two AWSRUN_HOMEs on one machine. The real CLI in subprocesses, against moto, loopback sshd hosts and tmux;
the races run several rounds."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.harness.clusters import (  # noqa: F401
    job_cluster,
    local_cluster,
    local_cluster_in,
    ssh_cluster,
    wait_for,
)
from tests.test_up_e2e import SSH_CIDR, _start_paused, live, ok

ROUNDS = 3


def _up_argv(cli) -> list[str]:
    return cli.argv("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap")


def test_two_ups_at_once_launch_one_instance(cli, ec2, fleet):
    for round_ in range(ROUNDS):
        processes = [subprocess.Popen(_up_argv(cli), cwd=cli.cwd, env=cli.environment(), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        outcomes = [(p.wait(timeout=300), *p.communicate()) for p in processes]
        assert [code for code, _, _ in outcomes] == [0, 0], (round_, outcomes)
        assert len(live(ec2)) == 1, (round_, outcomes)
        ok(cli("down", "--yes"))


def test_a_second_up_waits_for_the_first_and_then_carries_on_with_its_launch(cli, ec2, fleet):
    first = _start_paused(cli, "before-launch")  # holds the cluster, its launch token recorded
    second = subprocess.Popen(_up_argv(cli), cwd=cli.cwd, env=cli.environment(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 60
    while b"waiting for it" not in seen:
        assert time.monotonic() < deadline and second.poll() is None, seen
        seen += os.read(second.stderr.fileno(), 65536)
    assert f"another `awsrun up` of cluster 'default' is running (pid {first.pid})".encode() in seen
    assert live(ec2) == []  # the second launched nothing while the first held the cluster
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert len(live(ec2)) == 1
    ok(cli("down", "--yes"))


JOB = """import os, sys, time
print('run', sys.argv[1], flush=True)
time.sleep(60)
"""


def test_two_submits_of_one_name_at_once_start_one_job_and_keep_its_log(cli, project, job_cluster):
    (project / "job.py").write_text(JOB)
    ok(cli("submit", "--name", "warm", "job.py", "0"))  # the project is there: the race is the start itself
    for round_ in range(ROUNDS):
        racers = {who: cli.popen("submit", "--name", "race", "job.py", who, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for who in "AB"}
        outcomes = {who: (p.wait(timeout=120), p.communicate()[1]) for who, p in racers.items()}
        winners = [who for who, (code, _) in outcomes.items() if code == 0]
        assert len(winners) == 1, (round_, outcomes)
        (loser,) = set("AB") - set(winners)
        assert "job 'race' is still running" in outcomes[loser][1], outcomes
        log = job_cluster.job("race") / "log"
        wait_for(lambda: log.exists() and log.read_text() == f"run {winners[0]}\n", what=f"round {round_}: the log")
        assert job_cluster.sessions().count("race") == 1
        ok(cli("kill", "--force", "race"))


def test_two_awsrun_homes_on_one_machine_keep_their_own_jobs(cli, project, local_cluster, tmp_path):
    """Same user, same tmux directory, two AWSRUN_HOMEs: each has its own tmux server, so a session name
    in one never refuses, resets or kills a job of the other (`attach` finds its own)."""
    from tests.harness.cli import AwsrunCli

    (project / "job.py").write_text(JOB)
    (tmp_path / "b").mkdir()
    other_home = tmp_path / "home-b"
    other_home.mkdir(mode=0o700)
    other = local_cluster_in(tmp_path / "b", other_home)
    other_cli = AwsrunCli(home=other_home, cwd=project, env={**cli.env, "AWSRUN_REMOTE_DIR": str(other.remote_dir)})
    other.tmux_env = local_cluster.tmux_env  # the same machine: the same tmux directory
    try:
        ok(cli("submit", "--name", "work", "job.py", "A"))
        ok(other_cli("submit", "--name", "work", "job.py", "B"))
        for runner, cluster, who in ((cli, local_cluster, "A"), (other_cli, other, "B")):
            wait_for(lambda: "run " + who in runner("logs", "work").stdout, what=f"the job of home {who}")
            assert cluster.sessions() == ["work"]
        ok(cli("kill", "--force", "work"))
        assert "running" in ok(other_cli("jobs")).stdout and other.sessions() == ["work"]
        assert ok(other_cli("submit", "--name", "again", "job.py", "C")).exit_code == 0
        assert local_cluster.sessions() == []
    finally:
        other.tmux("kill-server")
        for step in other.cleanup:
            step()


def _remote_shells_mentioning(text: bytes, uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid and \
                    text in open(f"/proc/{entry}/cmdline", "rb").read():
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_ctrl_c_during_the_requirements_install_starts_no_job(cli, project, ssh_cluster):
    """pip is slow (a stand-in venv python whose pip sleeps); Ctrl-C reaches awsrun and its ssh as a
    terminal sends it. Before, the remote shell carried on and launched the job after pip."""
    import pwd

    from tests.harness.sshd import USER

    venv = ssh_cluster.host.home / "slowvenv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text('#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then : > "$HOME/pip-started"; '
                                 'sleep 3; : > "$HOME/pip-done"; exit 0; fi\nexec python3 "$@"\n')
    (venv / "python").chmod(0o755)
    cli.env["AWSRUN_VENV"] = "~/slowvenv"
    (project / "job.py").write_text("print('ran')\n")
    (project / "requirements.txt").write_text("# nothing to install\n")
    submit = cli.popen("submit", "job.py", stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    wait_for(lambda: (ssh_cluster.host.home / "pip-started").exists() or submit.poll() is not None,
             what="pip to start")
    os.killpg(submit.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    submit.communicate(timeout=60)
    assert submit.returncode != 0
    wait_for(lambda: (ssh_cluster.host.home / "pip-done").exists(), what="pip to finish")
    uid = pwd.getpwnam(USER).pw_uid
    wait_for(lambda: not _remote_shells_mentioning(b".awsrun/requirements", uid), what="the remote shell to end")
    assert not ssh_cluster.job("work").exists() and ssh_cluster.sessions() == []
    ok(cli("submit", "--follow", "job.py"))  # the install was recorded: the next submit just runs it


def test_a_local_job_holds_no_aws_credential_of_the_awsrun_that_started_it(cli, project, local_cluster):
    """The harness gives awsrun AWS credentials in its environment, as a laptop's shell does; the local
    provider's tmux server (started by awsrun) and the job must not hold them."""
    (project / "job.py").write_text("import json, os; print(json.dumps(sorted(os.environ)))\n")
    ok(cli("submit", "--follow", "job.py"))
    seen = (local_cluster.job("work") / "log").read_text()
    assert "AWS_REGION" in seen  # settings pass
    assert not [name for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if name in seen]


def test_env_values_reach_the_job_through_stdin_never_a_command_line(project, local_cluster, awsrun_home,
                                                                     monkeypatch):
    """In process, over the real local Remote with every command it runs recorded: a --env secret is in
    no command text (any user of the target can read command lines), only in a 0600 file and the job."""
    from awsrun.home import Home
    from awsrun.job import jobs, submission
    from awsrun.settings import Settings

    for name, value in local_cluster.tmux_env.items():
        monkeypatch.setenv(name, value)
    secret = "s3cret-" + os.urandom(8).hex()
    (project / "job.py").write_text("import os; print('seen' if os.environ['API_KEY'].startswith('s3cret-') else 'no')\n")
    settings = Settings(remote_dir=str(local_cluster.remote_dir), venv=str(local_cluster.remote_dir.parent / "nv"))
    commands: list[str] = []
    with jobs.open_host(Home(awsrun_home), settings) as host:
        real = host.remote.run

        def recording(command, **kwargs):
            commands.append(command if isinstance(command, str) else " ".join(command))
            return real(command, **kwargs)

        host.remote.run = recording
        submission.submit(host, submission.SubmitRequest(project, "job.py", session="sec", env={"API_KEY": secret}))
    job = local_cluster.job("sec")
    wait_for(lambda: (job / "exit_code").exists(), what="the job")
    assert (job / "log").read_text() == "seen\n"
    assert commands and not [c for c in commands if secret in c]
    assert (job / "env").stat().st_mode & 0o777 == 0o600 and secret.encode() in (job / "env").read_bytes()
    assert not list(job.parent.glob(".sec.env-*"))  # the staged copy moved into the job dir
