"""A job's own Python requirements, installed into the interpreter that runs it whenever the file changes.

The file is the `requirements.txt` nearest the script (its directory, then each parent up to the project
root), so `jobs/train_stn.py` brings `jobs/requirements.txt`. The check rides on submit's launch round
trip: a marker on the instance holds the file's digest and the interpreter; unchanged means no pip at all.
A changed file stops that round trip before the launch: pip runs as a step of its own, and the job is
launched by a further step only once pip reported success, so a Ctrl-C during the install starts nothing.
"""
from __future__ import annotations

import hashlib
import posixpath
import shlex
from pathlib import Path
from typing import Container

FILENAME = "requirements.txt"
EXIT_INSTALL_FAILED = 18
EXIT_NEEDS_INSTALL = 21  # check_step: the file changed since the last install (see submit)
MARKS = "~/.awsrun/requirements"


def find(script: str, synced: Container[str]) -> str | None:
    """The project-relative path of the requirements file for `script`, if the sync carries one."""
    directory = posixpath.dirname(script)
    while True:
        candidate = posixpath.join(directory, FILENAME) if directory else FILENAME
        if candidate in synced:
            return candidate
        if not directory:
            return None
        directory = posixpath.dirname(directory)


def digest(project_dir: Path, relative: str) -> str:
    return hashlib.sha256((project_dir / relative).read_bytes()).hexdigest()


def _paths(remote_root: str, relative: str, preferred: str, fallback: str) -> tuple[str, str]:
    """(the shell words choosing the interpreter into $py, the marker's path)."""
    from awsrun.job.tmux import remote_path

    key = hashlib.sha256(f"{remote_root}\0{relative}".encode()).hexdigest()[:16]
    return f"py={remote_path(preferred)}; [ -x \"$py\" ] || py={remote_path(fallback)}; ", f"{MARKS}/{key}"


def check_step(remote_root: str, relative: str, file_digest: str, preferred: str, fallback: str) -> str:
    """A shell step that exits EXIT_NEEDS_INSTALL unless the marker says the file is installed: the
    install is then its own step (install_step), and the launch comes only after it reported success."""
    interpreter, mark = _paths(remote_root, relative, preferred, fallback)
    return f"{interpreter}if [ \"$(cat {mark} 2>/dev/null)\" != \"{file_digest} $py\" ]; then exit {EXIT_NEEDS_INSTALL}; fi"


def install_step(remote_root: str, relative: str, file_digest: str, preferred: str, fallback: str,
                 pip_args: str = "") -> str:
    """A shell step that pip-installs the file with the job's interpreter unless the marker says it is done.

    Exits the remote shell with EXIT_INSTALL_FAILED (pip's output on stderr) when pip fails.
    """
    from awsrun.job.tmux import remote_path

    interpreter, mark = _paths(remote_root, relative, preferred, fallback)
    pip = ["-m", "pip", "install", "-q", "--disable-pip-version-check", *shlex.split(pip_args), "-r"]
    return (
        f"{interpreter}"
        f"if [ \"$(cat {mark} 2>/dev/null)\" != \"{file_digest} $py\" ]; then "
        f"\"$py\" {shlex.join(pip)} {remote_path(remote_root)}/{shlex.quote(relative)} 1>&2 "
        f"|| exit {EXIT_INSTALL_FAILED}; "
        f"mkdir -p {MARKS} && echo \"{file_digest} $py\" > {mark}; fi"
    )
