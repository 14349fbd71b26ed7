"""What reaches the user's terminal from elsewhere (job names and commands read from the instance, lines of
its bootstrap, EC2's answers) prints as text: never as rich markup (`[/opt/venv]` crashed the table, `[red]`
coloured it) and never as control sequences (ESC could clear the screen or retitle the window; a tab or
newline could forge rows of the tab-separated output scripts read)."""
from __future__ import annotations

import sys
import time

import pexpect
import pytest

from awsrun.ui import printable
from tests.harness.cli import guarded_env
from tests.harness.clusters import local_cluster  # noqa: F401 (fixtures)

OSC_TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"


@pytest.mark.parametrize("raw, shown", [
    ("python3 train.py --lr 1e-3", "python3 train.py --lr 1e-3"),
    ("[/opt/venv] torch[cuda] ünïcode 数字", "[/opt/venv] torch[cuda] ünïcode 数字"),
    (f"a{OSC_TITLE}b", "a\\x1b]0;pwned\\x07b"),
    (f"{CLEAR}x", "\\x1b[2Jx"),
    ("tab\there\nline\rcr", "tab\\there\\nline\\rcr"),
    ("evil\u202etxt.py", "evil\\u202etxt.py"),   # right-to-left override: shows 'evilyp.txt'
    ("nul\x00del\x7f", "nul\\x00del\\x7f"),
])
def test_printable_escapes_what_a_terminal_would_act_on(raw, shown):
    assert printable(raw) == shown


def test_printable_can_keep_line_breaks_for_multi_line_messages():
    assert printable(f"one\ntwo\t{CLEAR}", keep="\n\t") == "one\ntwo\t\\x1b[2J"


def _hostile_job(cluster, name: str, argv: list[str]) -> None:
    """A job directory as a compromised instance could leave it: any name, any argv."""
    job = cluster.job(name)
    job.mkdir(parents=True)
    (job / "argv").write_bytes(b"".join(word.encode() + b"\0" for word in argv))
    now = time.time()
    (job / "started_at").write_text(f"{now - 5}\n")
    (job / "ended_at").write_text(f"{now}\n")
    (job / "exit_code").write_text("0\n")


def _in_a_terminal(cli, *args: str) -> tuple[int, bytes]:
    child = pexpect.spawn(cli.argv(*args)[0], cli.argv(*args)[1:], cwd=str(cli.cwd),
                          env=cli.environment({"TERM": "xterm-256color", "COLUMNS": "300"}),
                          timeout=60, dimensions=(50, 300))
    output = child.read()
    child.close()
    return child.exitstatus, output


def test_jobs_prints_names_and_commands_from_the_instance_as_text(cli, project, local_cluster):
    (project / "quick.py").write_text("print('ok')\n")
    submitted = cli("submit", "--follow", "quick.py", "--out", "[/tmp/out]", "torch[cuda]", "[red]r[/red]")
    assert submitted.exit_code == 0, submitted
    _hostile_job(local_cluster, f"evil{OSC_TITLE}", ["python3", f"train.py{CLEAR}", "a\tforged\nrow"])

    piped = cli("jobs")
    assert piped.exit_code == 0, piped
    rows = piped.stdout.splitlines()
    assert rows[0].startswith("# jobs on cluster") and len(rows) == 4, rows  # title, header, two jobs
    assert all(len(row.split("\t")) == 6 for row in rows[1:]), rows
    assert "\x1b" not in piped.stdout
    assert "evil\\x1b]0;pwned\\x07\texited 0" in piped.stdout
    assert "train.py\\x1b[2J a\\tforged\\nrow" in piped.stdout
    assert "quick.py --out [/tmp/out] torch[cuda] [red]r[/red]" in piped.stdout

    status, screen = _in_a_terminal(cli, "jobs")
    assert status == 0, screen.decode(errors="replace")
    text = screen.decode()
    assert "│" in text  # rich drew the table
    assert "internal error" not in text and "MarkupError" not in text
    assert "quick.py --out [/tmp/out] torch[cuda] [red]r[/red]" in text
    assert OSC_TITLE.encode() not in screen and CLEAR.encode() not in screen
    assert "evil\\x1b]0;pwned\\x07" in text and "train.py\\x1b[2J" in text


def _python_in_a_terminal(program: str, tmp_path) -> tuple[int, bytes]:
    child = pexpect.spawn(sys.executable, ["-c", program], cwd=str(tmp_path),
                          env=guarded_env({"TERM": "xterm-256color"}), timeout=30, dimensions=(24, 200))
    output = child.read()
    child.close()
    return child.exitstatus, output


def test_progress_lines_from_the_instance_are_not_markup(tmp_path):
    """Bootstrap lines (apt, pip) reach the status line as they come: `[/opt/venv]` used to crash it."""
    status, output = _python_in_a_terminal(
        "import time\n"
        "from awsrun import ui\n"
        "with ui.phase('bootstrapping [/tmp]') as phase:\n"
        "    phase.update('installing into [/opt/venv] torch[cuda] [red]x[/red] \\x1b]0;pwned\\x07')\n"
        "    time.sleep(0.3)\n"
        "with ui.TransferProgress('pulling [/x]') as progress:\n"
        "    progress.started -= 5\n"
        "    progress(10, 50, '1MB/s', '0:00:01')\n"
        "    time.sleep(0.3)\n"
        "print('finished')\n", tmp_path)
    assert status == 0, output.decode(errors="replace")
    assert b"bootstrapping [/tmp]: done after" in output and b"finished" in output
    assert b"installing into [/opt/venv] torch[cuda] [red]x[/red] \\x1b]0;pwned\\x07" in output  # as text
    assert b"pulling [/x]: 10 B (50%)" in output
    assert OSC_TITLE.encode() not in output


def test_error_lines_escape_what_the_instance_put_in_them(tmp_path):
    status, output = _python_in_a_terminal(
        "from awsrun import ui\n"
        "from awsrun.errors import RemoteError\n"
        "ui.error(RemoteError('bootstrap failed:\\nlast line \\x1b[2J', hint='see\\tthe log'))\n", tmp_path)
    assert status == 0, output
    assert CLEAR.encode() not in output
    assert b"error: bootstrap failed:\r\nlast line \\x1b[2J" in output   # the pty turns \n into \r\n
    assert b"  hint: see\tthe log" in output


def test_our_lines_are_escaped_and_a_jobs_own_output_is_passed_through(tmp_path):
    """ui.out carries what the instance reports (bootstrap's verify line: torch version, GPU name) and EC2's
    words (doctor); ui.job_output is the job's stdout, which `logs` shows as `tail -f` would."""
    status, output = _python_in_a_terminal(
        "from awsrun import ui\n"
        "ui.out('torch 2.1\\x1b]0;pwned\\x07, GPU Tesla\\u202eT4')\n"
        "ui.job_output('epoch 1 \\x1b[32mok\\x1b[0m')\n", tmp_path)
    assert status == 0, output
    assert "torch 2.1\\x1b]0;pwned\\x07, GPU Tesla\\u202eT4".encode() in output
    assert OSC_TITLE.encode() not in output
    assert b"epoch 1 \x1b[32mok\x1b[0m" in output


def test_a_port_that_speaks_no_ssh_is_one_error_line_without_paramikos_traceback(cli):
    """paramiko logs a failed handshake with its traceback from its own thread; none of it reaches the user."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer_like_a_web_server():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=answer_like_a_web_server, daemon=True).start()
    try:
        result = cli("up", "--host", f"ubuntu@127.0.0.1:{port}", "--no-bootstrap", env={"AWSRUN_SSH_TIMEOUT": "3"})
    finally:
        server.close()
    assert result.exit_code != 0, result
    assert "Traceback" not in result.stderr and "Exception (client)" not in result.stderr, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # paramiko's reason depends on when the server's close lands: no banner, or the connection reset
    assert error.startswith(f"error: SSH to ubuntu@127.0.0.1:{port} did not answer: "), error
    assert error.endswith("(the host is recorded in cluster 'default')"), error
