"""awsrun.job.tmux: exact builders (hostile input included), then the same lines run by bash against a private
tmux server, to show they do what the words say."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from awsrun.errors import ConfigError
from awsrun.job import environment, readers, start_lock, tmux
from tests.harness.clusters import wait_for

HOSTILE = ["a b", "; rm -rf ~", "$(touch pwned)", "`id`", "'", '"', "\\", "*", "~", "", "line\nbreak", "ü", "-x"]


@pytest.mark.parametrize("name", ["work", "w", "a-b_c", "Run2", "0", "x" * 64])
def test_session_names_tmux_takes(name):
    assert tmux.validate_session_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "_x", "a.b", "a:b", "a b", "a;b", "$(id)", "x" * 65, "ü", "a\nb", "=a"])
def test_session_names_tmux_cannot_take_are_refused_with_the_reason(name):
    with pytest.raises(ConfigError, match="letters, digits, '-' or '_'"):
        tmux.validate_session_name(name)


def test_env_pairs():
    assert environment.validate_env(["A=1", "B_2=x=y", "C=", "D=; $(id) 'q'"]) == {"A": "1", "B_2": "x=y", "C": "", "D": "; $(id) 'q'"}
    for bad in ["A", "=1", "1A=x", "A-B=x", "A B=x", "A=\0"]:
        with pytest.raises(ConfigError):
            environment.validate_env([bad])


@pytest.mark.parametrize("path, quoted", [
    ("~", "~"), ("~/awsrun/p", "~/awsrun/p"), ("~/a b/c", "~/'a b/c'"), ("/x y", "'/x y'"),
    ("~user/x", "'~user/x'"), ("a;b", "'a;b'"), ("~/$(id)", "~/'$(id)'"), ("/p/'q'", "'/p/'\"'\"'q'\"'\"''"),
])
def test_remote_paths_are_quoted_but_a_leading_tilde_expands(path, quoted):
    assert tmux.remote_path(path) == quoted


def test_job_dir():
    assert tmux.job_dir("work") == "~/.awsrun/jobs/work"
    assert tmux.job_dir("work", "/home/me/.awsrun/jobs/") == "/home/me/.awsrun/jobs/work"
    with pytest.raises(ConfigError):
        tmux.job_dir("../x")


def test_launch_line():
    assert tmux.launch_line("work", "~/awsrun/my project") == (
        f"unset {' '.join(tmux.SECRET_ENV)}; tmux -L awsrun new-session -d -s work -x 200 -y 50 bash -c "
        + shlex.quote(tmux.WRAPPER) + " awsrun-job ~/.awsrun/jobs/work ~/'awsrun/my project' "
        "\\; set-option -gq exit-empty off"
    )
    assert " -L awsrun-1 new-session " in tmux.launch_line("work", "~", "/j", socket="awsrun-1")
    assert tmux.launch_line("work", "~", output_dir="runs/my run").endswith(
        " awsrun-job ~/.awsrun/jobs/work ~ 'runs/my run' \\; set-option -gq exit-empty off")


def _locked(line: str, python: str = "python3", lock: str = "~/.awsrun/jobs/.work.lock") -> str:
    """The script a start line runs under its lock, after checking the lock's words."""
    head, sep, tail = line.partition("; if command -v flock >/dev/null 2>&1; then ")
    assert head.startswith("awsrun_start=") and sep
    directory = lock.rsplit("/", 1)[0]
    assert tail == (f"[ -d {directory} ] || ( umask 077; mkdir -p {directory} ); "
                    f"( flock -E 16 -w {start_lock.START_LOCK_WAIT_S} 9 || exit $?; eval \"$awsrun_start\" ) 9>{lock}; "
                    f"else {python} -c {shlex.quote(start_lock.LOCK_PROGRAM)} {lock} {start_lock.START_LOCK_WAIT_S} "
                    '"$awsrun_start"; fi')
    return shlex.split(head[len("awsrun_start="):])[0]


PRIVATE = ("u=$(umask); umask 077; [ -e ~/.awsrun/jobs/.private ] || { mkdir -p ~/.awsrun/jobs && "
           "chmod 700 ~/.awsrun ~/.awsrun/jobs && : > ~/.awsrun/jobs/.private; } || exit 1; ")


def _running_check(name: str, socket: str = "awsrun") -> str:
    return (f"e=; if [ -e ~/.awsrun/jobs/{name} ]; then if [ -e ~/.awsrun/jobs/{name}/exit_code ]; then e=1; "
            f"elif tmux -L {socket} has-session -t ={name} 2>/dev/null; then exit 17; fi; fi; ")


def _launched(launch: str, name: str, socket: str = "awsrun") -> str:
    return (f"{{ {launch} || if tmux -L {socket} has-session -t ={name} 2>/dev/null; then if [ -n \"$e\" ]; then "
            f"tmux -L {socket} kill-session -t ={name} 2>/dev/null && . ~/.awsrun/jobs/{name}/launch; "
            "else exit 17; fi; else false; fi; } 9>&-")


def test_start_job_plain():
    launch = tmux.launch_line("work", "~")
    assert _locked(tmux.start_job("work", "~", ["python3", "-c", "print(1)"])) == (
        PRIVATE + _running_check("work") +
        "{ [ ! -e ~/.awsrun/jobs/work ] || rm -rf ~/.awsrun/jobs/work; } && mkdir -p ~/.awsrun/jobs/work && "
        "printf '%s\\0' PYTHONUNBUFFERED=1 > ~/.awsrun/jobs/work/env && "
        "printf '%s\\0' python3 -c 'print(1)' > ~/.awsrun/jobs/work/argv && "
        f"printf '%s\\n' {shlex.quote(launch)} > ~/.awsrun/jobs/work/launch && "
        f"echo \"${{EPOCHSECONDS:-$(date +%s)}}\" > ~/.awsrun/jobs/work/started_at && umask \"$u\" && "
        + _launched(launch, "work")
    )


def test_start_job_with_venv_output_dir_env_and_hostile_words():
    line = tmux.start_job("run-1", "~/awsrun/p q", ["python3", "train.py", *HOSTILE], {"K": "v; $(id)"},
                          prefer="~/venvs/awsrun/bin/python", output_dir="runs/run-1", socket="awsrun-x",
                          python="/usr/bin/python3", env_file="~/.awsrun/jobs/.run-1.env-ab")
    launch = tmux.launch_line("run-1", "~/awsrun/p q", socket="awsrun-x", output_dir="runs/run-1")
    words = " ".join(shlex.quote(w) for w in ["train.py", *HOSTILE])
    assert _locked(line, "/usr/bin/python3", "~/.awsrun/jobs/.run-1.lock") == (
        PRIVATE + _running_check("run-1", "awsrun-x") +
        "p=python3; if [ -x ~/venvs/awsrun/bin/python ]; then p=~/venvs/awsrun/bin/python; fi; "
        "{ [ ! -e ~/.awsrun/jobs/run-1 ] || rm -rf ~/.awsrun/jobs/run-1; } && mkdir -p ~/.awsrun/jobs/run-1 && "
        "printf '%s\\0' PYTHONUNBUFFERED=1 AWSRUN_OUTPUT_DIR=runs/run-1 'K=v; $(id)' > ~/.awsrun/jobs/run-1/env && "
        "cat ~/.awsrun/jobs/.run-1.env-ab >> ~/.awsrun/jobs/run-1/env && rm -f ~/.awsrun/jobs/.run-1.env-ab && "
        f"printf '%s\\0' \"$p\" {words} > ~/.awsrun/jobs/run-1/argv && "
        f"printf '%s\\n' {shlex.quote(launch)} > ~/.awsrun/jobs/run-1/launch && "
        f"echo \"${{EPOCHSECONDS:-$(date +%s)}}\" > ~/.awsrun/jobs/run-1/started_at && umask \"$u\" && "
        + _launched(launch, "run-1", "awsrun-x")
    )
    assert words.split(" ")[:4] == ["train.py", "'a", "b'", "';"]  # each hostile word is one quoted word


def test_each_awsrun_home_has_its_own_tmux_socket():
    one, other = tmux.home_socket("/home/me/.awsrun"), tmux.home_socket("/home/me/other-home")
    assert one != other and one.startswith("awsrun-") and one == tmux.home_socket("/home/me/.awsrun")


def test_start_job_refuses_bad_names_and_empty_commands():
    with pytest.raises(ConfigError):
        tmux.start_job("a;b", "~", ["true"])
    with pytest.raises(ConfigError):
        tmux.start_job("work", "~", [])


def test_kill_job():
    assert tmux.kill_job("work", grace_s=0) == (
        "if ! tmux -L awsrun has-session -t =work 2>/dev/null || [ -e ~/.awsrun/jobs/work/exit_code ]; then exit 3; fi; "
        "if [ -d ~/.awsrun/jobs/work ]; then date +%s > ~/.awsrun/jobs/work/killed_at; fi; "
        "tmux -L awsrun kill-session -t =work 2>/dev/null; exit 0"
    )
    assert tmux.kill_job("work", "/j", grace_s=2) == (
        "if ! tmux -L awsrun has-session -t =work 2>/dev/null || [ -e /j/work/exit_code ]; then exit 3; fi; "
        "if [ -d /j/work ]; then date +%s > /j/work/killed_at; fi; "
        "tmux -L awsrun send-keys -t =work: C-c 2>/dev/null; i=0; "
        "while tmux -L awsrun has-session -t =work 2>/dev/null && [ ! -e /j/work/exit_code ] && [ $i -lt 20 ]; "
        "do sleep 0.1; i=$((i+1)); done; "
        "tmux -L awsrun kill-session -t =work 2>/dev/null; exit 0"
    )


def test_attach_list_and_follow_builders():
    assert tmux.attach_job("work") == ["env", "-u", "TMUX", "tmux", "-L", "awsrun", "attach-session", "-t", "=work"]
    assert readers.list_jobs("/usr/bin/python3", "/j k") == (
        "{ tmux -L awsrun list-sessions -F '#{session_name}' 2>/dev/null || true; } | "
        f"/usr/bin/python3 -c {shlex.quote(readers.LIST_PROGRAM)} '/j k'"
    )
    assert readers.follow_log("work", "python3", lines=5, follow=True) == (
        f"python3 -c {shlex.quote(readers.FOLLOW_PROGRAM)} ~/.awsrun/jobs/work work 5 1 awsrun"
    )
    assert readers.follow_log("work", "python3").endswith(" ~/.awsrun/jobs/work work -1 0 awsrun")


# --- the lines, run ---------------------------------------------------------------------------------

@pytest.fixture
def machine(tmp_path):
    """A private tmux server and job root on this machine."""
    tmux_dir = Path(tempfile.mkdtemp(prefix="awt-", dir="/tmp"))
    env = {**os.environ, "TMUX_TMPDIR": str(tmux_dir)}

    def sh(line: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", line], env=env, cwd=tmp_path, capture_output=True, text=True, input=stdin)

    sh.env = env
    sh.root = str(tmp_path / "jobs")
    sh.workdir = tmp_path / "work dir"
    sh.workdir.mkdir()
    yield sh
    sh(shlex.join(tmux.tmux("kill-server")))
    shutil.rmtree(tmux_dir, ignore_errors=True)


def _listing(machine) -> dict:
    result = machine(readers.list_jobs("python3", machine.root))
    assert result.returncode == 0, result.stderr
    return {job["name"]: job for job in json.loads(result.stdout)["jobs"]}


def test_a_job_gets_its_argv_verbatim_records_pid_log_exit_code_and_refuses_a_second_start(machine):
    script = ("import json, os, sys, time; print(json.dumps(sys.argv[1:]), flush=True); "
              "print(os.environ['AWSRUN_OUTPUT_DIR'], os.environ['K'], os.getcwd(), flush=True); "
              "print(os.getpid(), flush=True); time.sleep(float(os.environ['NAP'])); sys.exit(4)")
    line = tmux.start_job("work", str(machine.workdir), ["python3", "-c", script, *HOSTILE],
                          {"K": "v; $(id) 'q'", "NAP": "0.5"}, jobs_root=machine.root, prefer="/nonexistent/python",
                          output_dir="runs/work")
    assert machine(line).returncode == 0
    assert machine(line).returncode == tmux.EXIT_RUNNING
    job = Path(machine.root) / "work"
    assert (job / "argv").read_bytes().split(b"\0")[:-1] == [w.encode() for w in ["python3", "-c", script, *HOSTILE]]
    assert (job / "env").read_bytes().split(b"\0")[:-1] == [w.encode() for w in [
        "PYTHONUNBUFFERED=1", "AWSRUN_OUTPUT_DIR=runs/work", "K=v; $(id) 'q'", "NAP=0.5"]]
    assert _listing(machine)["work"]["alive"] is True
    wait_for(lambda: (job / "exit_code").exists(), what="the exit code")
    lines = (job / "log").read_text().splitlines()
    assert json.loads(lines[0]) == HOSTILE
    assert lines[1] == f"runs/work v; $(id) 'q' {machine.workdir}"
    assert lines[2] == (job / "pid").read_text().strip()  # pid is the job itself
    assert (job / "exit_code").read_text() == "4\n"
    assert (machine.workdir / "runs" / "work").is_dir()
    assert not (machine.workdir / "pwned").exists()
    listed = _listing(machine)["work"]
    assert (listed["exit_code"], listed["killed_at"]) == (4, None)
    assert listed["ended_at"] >= listed["started_at"]
    # finished: the name is free again, and the job dir starts afresh
    assert machine(line).returncode == 0
    wait_for(lambda: (job / "exit_code").exists(), what="the second run")
    assert len((job / "log").read_text().splitlines()) == 3


def test_the_launch_file_restarts_a_job_as_the_agent_does_after_a_reboot(machine):
    line = tmux.start_job("again", str(machine.workdir), ["python3", "-c", "print('ran')"], jobs_root=machine.root)
    assert machine(line).returncode == 0
    job = Path(machine.root) / "again"
    wait_for(lambda: (job / "exit_code").exists(), what="the first run")
    for stale in ("exit_code", "ended_at", "pid"):
        (job / stale).unlink()
    assert machine(f"cd / && bash {shlex.quote(str(job / 'launch'))}").returncode == 0
    wait_for(lambda: (job / "exit_code").exists(), what="the restarted run")
    assert (job / "log").read_text() == "ran\nran\n"


def test_the_server_outlives_its_last_job_so_back_to_back_jobs_never_meet_it_exiting(machine):
    """Jobs that end at once, started back to back: each start finds the server there (a server exiting
    as the next session starts failed that start, "server exited unexpectedly"); then `down`'s line ends
    the idle server, and leaves a server that still runs a job alone."""
    for index in range(20):
        line = tmux.start_job(f"quick-{index}", str(machine.workdir), ["true"], jobs_root=machine.root)
        started = machine(line)
        assert started.returncode == 0, started.stderr
    wait_for(lambda: all((Path(machine.root) / f"quick-{i}" / "exit_code").exists() for i in range(20)),
             what="the quick jobs")
    wait_for(lambda: machine(shlex.join(tmux.tmux("list-sessions", "-F", "x"))).stdout == "", what="no session")
    assert machine(shlex.join(tmux.tmux("list-sessions"))).returncode == 0  # no session, and the server is up

    running = tmux.start_job("long", str(machine.workdir), ["sleep", "60"], jobs_root=machine.root)
    assert machine(running).returncode == 0
    assert machine(tmux.stop_idle_server()).returncode == 0
    assert _listing(machine)["long"]["alive"] is True  # a server with a job is left alone
    assert machine(tmux.kill_job("long", machine.root, grace_s=0)).returncode == 0
    assert machine(tmux.stop_idle_server()).returncode == 0
    gone = machine(shlex.join(tmux.tmux("list-sessions")))
    assert gone.returncode != 0 and "no server running" in gone.stderr


def test_follow_prints_the_tail_then_everything_until_the_end_and_the_state_last(machine):
    script = "import os, time\nfor i in range(5): print('line', i, flush=True)\nwhile not os.path.exists('go'): time.sleep(0.05)\nprint('end')"
    assert machine(tmux.start_job("f", str(machine.workdir), ["python3", "-c", script], jobs_root=machine.root)).returncode == 0
    log = Path(machine.root) / "f" / "log"
    wait_for(lambda: log.exists() and log.read_text().count("\n") == 5, what="five lines")
    tail = machine(readers.follow_log("f", "python3", lines=2, jobs_root=machine.root))
    assert tail.stdout == 'line 3\nline 4\nAWSRUN-STATUS {"exit_code": null, "killed": false, "running": true}\n'
    no_lines = machine(readers.follow_log("f", "python3", lines=0, jobs_root=machine.root))
    assert no_lines.stdout.startswith("AWSRUN-STATUS")
    follower = subprocess.Popen(["bash", "-c", readers.follow_log("f", "python3", lines=1, follow=True,
                                                                  jobs_root=machine.root)],
                                env=machine.env, stdout=subprocess.PIPE, text=True)
    assert follower.stdout.readline() == "line 4\n"
    (machine.workdir / "go").write_text("")  # the job ends while followed
    rest, _ = follower.communicate(timeout=30)
    assert rest == 'end\nAWSRUN-STATUS {"exit_code": 0, "killed": false, "running": false}\n'
    missing = machine(readers.follow_log("nope", "python3", jobs_root=machine.root))
    assert missing.stdout == 'AWSRUN-STATUS {"missing": true}\n'


def test_kill_sends_ctrl_c_first_so_the_job_can_checkpoint(machine):
    script = ("import time\ntry:\n    print('training', flush=True)\n    time.sleep(60)\n"
              "except KeyboardInterrupt:\n    print('checkpoint saved', flush=True)\n    raise SystemExit(5)")
    assert machine(tmux.start_job("k", str(machine.workdir), ["python3", "-c", script], jobs_root=machine.root)).returncode == 0
    job = Path(machine.root) / "k"
    wait_for(lambda: (job / "log").exists() and "training" in (job / "log").read_text(), what="the job to start")
    assert machine(tmux.kill_job("k", machine.root)).returncode == 0
    assert (job / "log").read_text() == "training\ncheckpoint saved\n"
    assert (job / "exit_code").read_text() == "5\n" and (job / "killed_at").exists()
    assert machine(tmux.kill_job("k", machine.root)).returncode == tmux.EXIT_NOT_RUNNING


def test_two_starts_of_one_name_at_once_start_one_job_and_never_delete_its_log(machine):
    """Both lines run at the same moment, 20 rounds: one starts, the other finds it running (before the
    start lock, both could reset the job dir: the running job's log was deleted, both said started)."""
    script = "import sys, time; print('run', sys.argv[1], flush=True); time.sleep(60)"
    job = Path(machine.root) / "race"
    for round_ in range(20):
        lines = {who: tmux.start_job("race", str(machine.workdir), ["python3", "-c", script, who],
                                     jobs_root=machine.root) for who in "AB"}
        racers = {who: subprocess.Popen(["bash", "-c", line], env=machine.env, cwd=machine.workdir,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                  for who, line in lines.items()}
        codes = {who: process.wait(timeout=60) for who, process in racers.items()}
        assert sorted(codes.values()) == [0, tmux.EXIT_RUNNING], (round_, codes)
        winner = next(who for who, code in codes.items() if code == 0)
        wait_for(lambda: (job / "log").exists() and f"run {winner}" in (job / "log").read_text(),
                 what=f"round {round_}: the log of {winner}")
        assert (job / "log").read_text() == f"run {winner}\n"
        assert _listing(machine)["race"]["alive"] is True
        assert machine(tmux.kill_job("race", machine.root, grace_s=0)).returncode == 0


def test_a_start_directory_with_tmux_formats_is_taken_literally(machine, tmp_path):
    """tmux expands #{...} and #(cmd) in `new-session -c`: the wrapper changes directory itself."""
    for name in ("exp#S", "p#(touch pwned)", "q#{session_name}"):
        workdir = tmp_path / name
        workdir.mkdir()
        line = tmux.start_job("fmt", str(workdir), ["python3", "-c", "import os; print(os.getcwd())"],
                              jobs_root=machine.root)
        assert machine(line).returncode == 0
        job = Path(machine.root) / "fmt"
        wait_for(lambda: (job / "exit_code").exists(), what=f"the job in {name}")
        assert (job / "log").read_text() == f"{workdir}\n" and (job / "exit_code").read_text() == "0\n"
    assert not list(tmp_path.rglob("pwned")) and not (Path.cwd() / "pwned").exists()


def test_a_job_gets_no_aws_credential_from_whoever_started_its_tmux_server(machine):
    secrets = {name: f"leak-{name.lower()}" for name in tmux.SECRET_ENV}
    env = {**machine.env, **secrets, "AWS_REGION": "eu-west-1"}
    line = tmux.start_job("env", str(machine.workdir), ["python3", "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
                          jobs_root=machine.root)
    assert subprocess.run(["bash", "-c", line], env=env, cwd=machine.workdir).returncode == 0
    job = Path(machine.root) / "env"
    wait_for(lambda: (job / "exit_code").exists(), what="the job")
    seen = json.loads((job / "log").read_text())
    assert not set(secrets) & set(seen) and seen["AWS_REGION"] == "eu-west-1"  # settings pass, secrets do not
    server = machine(shlex.join(tmux.tmux("show-environment", "-g"))).stdout
    assert server and not [value for value in secrets.values() if value in server]


def test_a_jobs_setup_is_private(machine, tmp_path):
    """~/.awsrun 0700, the job dir 0700, its env file (--env values) and argv 0600, whatever the umask."""
    dot = tmp_path / "dot-awsrun"
    dot.mkdir(mode=0o755)
    os.chmod(dot, 0o755)
    root = str(dot / "jobs")
    line = tmux.start_job("p", str(machine.workdir), ["sleep", "30"], {"TOKEN": "s3cret"}, jobs_root=root,
                          output_dir="runs/p")
    assert machine(f"umask 022; {line}").returncode == 0
    job = dot / "jobs" / "p"
    modes = {path.name: path.stat().st_mode & 0o777 for path in (dot, dot / "jobs", job, job / "env", job / "argv")}
    assert modes == {"dot-awsrun": 0o700, "jobs": 0o700, "p": 0o700, "env": 0o600, "argv": 0o600}
    assert b"s3cret" not in (job / "argv").read_bytes() and b"TOKEN=s3cret\0" in (job / "env").read_bytes()
    outputs = machine.workdir / "runs" / "p"  # made by the job's wrapper, under the job's (the user's) umask
    wait_for(outputs.is_dir, what="the job's output directory")
    assert outputs.stat().st_mode & 0o777 == 0o755
    assert machine(tmux.kill_job("p", root, grace_s=0)).returncode == 0


@pytest.mark.parametrize("with_flock", [True, False], ids=["flock", "python-lock"])
def test_a_start_waits_for_the_lock_and_gives_up_with_exit_starting(machine, monkeypatch, tmp_path, with_flock):
    """The start lock, by flock(1) or (a target without it) by Python's: held by another start, a start
    exits EXIT_STARTING and touches nothing; free again, it starts. Its descriptor never reaches the job."""
    monkeypatch.setattr(start_lock, "START_LOCK_WAIT_S", 1)
    if not with_flock:  # a PATH where every tool is found but flock
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("bash", "tmux", "mkdir", "chmod", "rm", "date", "cat", "env", "sh", "tee", "mv", "python3", "sleep"):
            (bin_dir / tool).symlink_to(shutil.which(tool))
        machine.env["PATH"] = str(bin_dir)
    Path(machine.root).mkdir(mode=0o700)
    holder = subprocess.Popen(["python3", "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
                               f"{machine.root}/.held.lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        line = tmux.start_job("held", str(machine.workdir), ["sleep", "30"], jobs_root=machine.root)
        assert machine(line).returncode == tmux.EXIT_STARTING
        assert not (Path(machine.root) / "held").exists()
    finally:
        holder.kill()
        holder.wait()
    started = machine(line)
    assert started.returncode == 0, started.stderr
    pid_file = Path(machine.root) / "held" / "pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the job's pid")
    pid = pid_file.read_text().strip()
    server = machine(shlex.join(tmux.tmux("display-message", "-p", "#{pid}"))).stdout.strip()
    assert server.isdigit()  # the start launched this server: neither it nor the job holds the lock
    for holder_pid in (pid, server):
        assert not [fd for fd in os.listdir(f"/proc/{holder_pid}/fd")
                    if os.readlink(f"/proc/{holder_pid}/fd/{fd}").endswith(".held.lock")]
    assert machine(tmux.kill_job("held", machine.root, grace_s=0)).returncode == 0


def test_a_job_whose_output_directory_cannot_be_made_ends_at_once_and_says_why(machine):
    (machine.workdir / "runs").write_text("a file where the outputs should go")
    line = tmux.start_job("blocked", str(machine.workdir), ["python3", "-c", "print('ran')"], jobs_root=machine.root,
                          output_dir="runs/blocked")
    assert machine(line).returncode == 0
    job = Path(machine.root) / "blocked"
    wait_for(lambda: (job / "exit_code").exists(), what="the exit code")
    assert (job / "exit_code").read_text() == "1\n"
    log = (job / "log").read_text()
    assert "runs" in log and "ran" not in log


def test_a_session_of_the_name_without_its_job_dir_is_left_running_and_refuses_the_start(machine):
    """A session of that name whose job dir is gone (deleted by hand): the start says running (17), and
    the session lives on."""
    assert machine(shlex.join(tmux.tmux("new-session", "-d", "-s", "orphan", "sleep 60"))).returncode == 0
    line = tmux.start_job("orphan", str(machine.workdir), ["python3", "-c", "print('ran')"], jobs_root=machine.root)
    assert machine(line).returncode == tmux.EXIT_RUNNING
    assert machine(shlex.join(tmux.tmux("has-session", "-t", "=orphan"))).returncode == 0
    assert not (Path(machine.root) / "orphan" / "log").exists()


def test_an_ended_jobs_session_still_there_is_replaced_by_the_new_start(machine):
    """The job wrote its exit code, its session has not gone yet: the start ends that session and starts."""
    first = tmux.start_job("again", str(machine.workdir), ["python3", "-c", "print('one')"], jobs_root=machine.root)
    assert machine(first).returncode == 0
    job = Path(machine.root) / "again"
    wait_for(lambda: (job / "exit_code").exists(), what="the first run")
    assert machine(shlex.join(tmux.tmux("new-session", "-d", "-s", "again", "sleep 60"))).returncode == 0
    second = tmux.start_job("again", str(machine.workdir), ["python3", "-c", "print('two')"], jobs_root=machine.root)
    started = machine(second)
    assert started.returncode == 0, started.stderr
    wait_for(lambda: (job / "exit_code").exists(), what="the second run")
    assert (job / "log").read_text() == "two\n"
