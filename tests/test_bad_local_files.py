"""Bad local files through the real CLI: a pyproject.toml whose `tool` is no table, an AWSRUN_HOME that names
no directory, a ~/.ssh that `ssh-config --install` cannot use, a state.db that SQLite reads but awsrun cannot,
and job metadata a job's own process scribbled on. Each is one `error:` line and a non-zero exit (the
scribbled metadata: no error at all), never a traceback nor `error: internal error`."""
from __future__ import annotations

import json
import pwd
import sqlite3

import pytest

from tests.harness.clusters import local_cluster  # noqa: F401 (fixture)


def one_error(result, exit_code: int) -> str:
    """The one `error:` line of a failed command, checked for what must never be there."""
    assert result.exit_code == exit_code, result
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result
    return errors[0]


# --- pyproject.toml ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, what, kind", [
    ('tool = "awsrun"\n', "`tool`", "a string"),
    ('tool = ["awsrun"]\n', "`tool`", "an array"),
    ('[tool]\nawsrun = "x"\n', "[tool.awsrun]", "a string"),
    ('[tool]\nawsrun = []\n', "[tool.awsrun]", "an array"),   # empty: once taken as no settings at all
    ('tool.awsrun = false\n', "[tool.awsrun]", "a boolean"),
])
def test_a_pyproject_whose_tool_or_awsrun_is_no_table_is_a_config_error(cli, project, text, what, kind):
    (project / "pyproject.toml").write_text(text)
    line = one_error(cli("config"), 2)
    assert line == f"error: {project / 'pyproject.toml'}: {what} must be a table, got {kind}"


# --- AWSRUN_HOME ------------------------------------------------------------------------------------

def test_an_awsrun_home_under_an_unknown_user_is_not_usable(cli):
    user = "awsrun-no-such-user"
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    result = cli("status", env={"AWSRUN_HOME": f"~{user}/x"})
    assert one_error(result, 3) == (f"error: AWSRUN_HOME ~{user}/x is not usable: "
                                    f"there is no user '{user}' to expand ~{user}")
    assert "hint: point AWSRUN_HOME at a directory" in result.stderr


# --- ssh-config --install ----------------------------------------------------------------------------

def test_install_when_dot_ssh_is_a_file_says_so(cli, tmp_path):
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    (user_home / ".ssh").write_text("not a directory\n")
    result = cli("ssh-config", "--install", env={"HOME": str(user_home)})
    assert one_error(result, 3) == f"error: {user_home / '.ssh'} is not a directory, so it cannot hold config"
    assert f"hint: move {user_home / '.ssh'} aside" in result.stderr
    assert (user_home / ".ssh").read_text() == "not a directory\n"


def test_install_leaves_a_user_config_that_is_not_utf8_alone(cli, tmp_path):
    user_home = tmp_path / "user-home"
    (user_home / ".ssh").mkdir(parents=True)
    config = user_home / ".ssh" / "config"
    content = b"\xffHost old\n    User me\n"
    config.write_bytes(content)
    result = cli("ssh-config", "--install", env={"HOME": str(user_home)})
    assert one_error(result, 3) == f"error: {config} is not UTF-8 text (byte 0), so awsrun left it as it was"
    assert "at the top of your ssh config yourself" in result.stderr
    assert config.read_bytes() == content
    assert sorted(p.name for p in config.parent.iterdir()) == ["config"]


# --- state.db that SQLite reads, holding what awsrun cannot use --------------------------------------------

def _sql(home, statements: str) -> None:
    db = sqlite3.connect(home / "state.db")
    try:
        db.executescript(statements)
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize("statements, commands, wording", [
    ("UPDATE clusters SET config='not json'", ("status", "jobs", "down --yes"),
     "a row of clusters has config 'not json', not JSON"),
    ("UPDATE clusters SET config='[1,2]'", ("status", "jobs", "down --yes"),
     "a row of clusters has config [1, 2], not dict"),
    ("UPDATE clusters SET config='locked'", ("status",),   # not taken for SQLite's `database is locked`
     "a row of clusters has config 'locked', not JSON"),
    ("UPDATE clusters SET created_at='yesterday'", ("status",),
     "a row of clusters has created_at 'yesterday', not int or float"),
    ("UPDATE instances SET extra='{'", ("status", "jobs"),
     "a row of instances has extra '{', not JSON"),
    ("UPDATE instances SET node='zero'", ("status",), "a row of instances has node 'zero', not int"),
    ("INSERT INTO jobs VALUES ('default', 'w', 'not json', '/tmp', 1)", ("status", "jobs"),
     "a row of jobs has command 'not json', not JSON"),
    ("INSERT INTO jobs VALUES ('default', 'w', '[1]', '/tmp', 1)", ("jobs",),
     "a row of jobs has command [1], not a list of strings"),
])
def test_state_rows_awsrun_cannot_read_are_an_unreadable_state_database(cli, awsrun_home, local_cluster,
                                                                        statements, commands, wording):
    _sql(awsrun_home, statements)
    db = awsrun_home / "state.db"
    for command in commands:
        result = cli(*command.split())
        assert one_error(result, 3) == f"error: state database {db} is unreadable: {wording}", command
        assert f"hint: move it aside (mv {db} {db}.bad)" in result.stderr


def test_a_kept_disk_row_that_is_no_disk_is_an_unreadable_state_database(cli, awsrun_home, aws):
    _sql(awsrun_home, "CREATE TABLE kept_disks (id TEXT PRIMARY KEY, region TEXT, cluster TEXT, recorded_at REAL);"
                      "INSERT INTO kept_disks VALUES ('vol-1', X'00', NULL, 1);")
    db = awsrun_home / "state.db"
    assert one_error(cli("status"), 3) == (f"error: state database {db} is unreadable: a row of kept_disks has "
                                           "id and region ('vol-1', b'\\x00'), not two strings")


def test_a_state_db_with_a_foreign_clusters_table_is_unreadable(cli, awsrun_home):
    _sql(awsrun_home, "CREATE TABLE clusters (name TEXT PRIMARY KEY, colour TEXT);"
                      "INSERT INTO clusters VALUES ('default', 'red');")
    db = awsrun_home / "state.db"
    for command in ("status", "jobs"):
        result = cli(command)
        assert one_error(result, 3).startswith(f"error: state database {db} is unreadable: "
                                               "its clusters table has no column "), result


# --- job metadata written on the machine ------------------------------------------------------------------

@pytest.mark.parametrize("started_at", ["nan", "inf", "-inf", "1e300", "-5", "99999999999", "soon"])
def test_a_start_time_no_job_can_have_is_no_start_time(cli, project, local_cluster, started_at):
    (project / "hello.py").write_text("print('hello')\n")
    assert cli("submit", "--follow", "hello.py").exit_code == 0
    (local_cluster.job("work") / "started_at").write_text(started_at + "\n")

    table = cli("jobs")
    assert table.exit_code == 0, table
    assert "error" not in table.stderr and "Traceback" not in table.stderr, table
    assert "work\texited 0\t\t" in table.stdout, table   # listed, its start and duration unknown
    listed = cli("jobs", "--json")
    assert listed.exit_code == 0, listed
    job = json.loads(listed.stdout)[0]
    assert (job["name"], job["started_at"], job["duration"], job["exit_code"]) == ("work", None, None, 0)


@pytest.mark.parametrize("written, exit_code", [
    ("nan", None), ("inf", None), ("1e300", None), ("3.7", None), ("999999999999999999999", None), ("\xb2", None),
    ("-0", 0), ("7", 7),
])
def test_an_exit_code_no_job_can_have_is_no_exit_code(cli, project, local_cluster, written, exit_code):
    (project / "hello.py").write_text("print('hello')\n")
    assert cli("submit", "--follow", "hello.py").exit_code == 0
    (local_cluster.job("work") / "exit_code").write_text(written + "\n")

    listed = cli("jobs", "--json")
    assert listed.exit_code == 0, listed
    assert "error" not in listed.stderr, listed
    job = json.loads(listed.stdout)[0]
    assert (job["name"], job["exit_code"]) == ("work", exit_code)
    assert job["state"] == ("exited" if exit_code is not None else "killed")  # its session is gone
    assert isinstance(job["started_at"], float)

    followed = cli("logs", "-f", "work")   # the same file, read by the log follower
    assert "Traceback" not in followed.stderr and "internal error" not in followed.stderr, followed
    assert followed.stdout == "hello\n"


def test_a_workdir_with_a_newline_is_named_on_one_line(cli, project):
    (project / "ok.py").write_text("print('ok')\n")
    result = cli("submit", "--workdir", "/tmp/a\nb", "ok.py")
    assert result.exit_code != 0 and "Traceback" not in result.stderr, result
    assert result.stderr.splitlines()[0] == "error: project directory '/tmp/a\\nb' does not exist", result


@pytest.mark.parametrize("source, value", [("env", "out"), ("env", "awsrun"), ("toml", ""), ("toml", "rel/dir"),
                                           ("env", "/tmp/a\nb")])
def test_a_remote_dir_that_is_not_absolute_is_refused(cli, project, source, value):
    """A relative remote_dir lands where the command runs: on this machine, inside the project."""
    env = {}
    if source == "env":
        env["AWSRUN_REMOTE_DIR"] = value
    else:
        (project / "awsrun.toml").write_text(f"remote_dir = {value!r}\n".replace("'", '"'))
    result = cli("config", env=env)
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result
    assert f"remote_dir {value!r} must be an absolute path or start with ~ (like ~/awsrun)" in result.stderr


def test_a_remote_dir_inside_the_project_is_refused_on_this_machine(cli, project, local_cluster):
    (project / "ok.py").write_text("print('ok')\n")
    inside = project / "out"
    result = cli("submit", "ok.py", env={"AWSRUN_REMOTE_DIR": str(inside)})
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result
    assert f"inside the project {project}: each submit would copy the project into itself" in result.stderr
    assert not inside.exists()
