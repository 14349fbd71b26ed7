"""Where a local project lives on the target, and which local project a remote directory holds."""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from awsrun.home import Home
from awsrun.state import JobRecord, State


def project_remote_dir(remote_dir: str, project_dir: Path) -> str:
    """remote_dir/NAME-HASH: the project's directory name and a short hash of its absolute path, so that
    two projects of the same name from different places never share (and delete) each other's files."""
    absolute = os.path.abspath(project_dir)
    digest = hashlib.sha256(os.fsencode(absolute)).hexdigest()[:8]
    return f"{remote_dir.rstrip('/') or '/'}/{Path(absolute).name}-{digest}"


def remember_project(home: Home, remote_root: str, project_dir: Path) -> None:
    """Note which local project a remote directory holds (AWSRUN_HOME/projects/NAME-HASH), for `jobs`
    and `status`."""
    directory = home.root / "projects"
    if _local_project(home, remote_root) == os.path.abspath(project_dir):
        return  # already noted: a resubmit writes nothing here
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".project-")
        with os.fdopen(fd, "w") as handle:
            handle.write(os.path.abspath(project_dir))
        os.replace(temp, directory / PurePosixPath(remote_root).name)
    except OSError:
        pass  # only a label for `jobs`


@dataclass(frozen=True)
class ProjectDir:
    remote_dir: str     # where on the target, e.g. ~/awsrun/train-1a2b3c4d
    local: str          # the local project synced there from here; "" when not known


def project_dirs(home: Home, records: list[JobRecord]) -> tuple[ProjectDir, ...]:
    """The remote directories these jobs ran in, each once, with the local project synced there."""
    workdirs = dict.fromkeys(record.workdir for record in records)
    return tuple(ProjectDir(workdir, _local_project(home, workdir)) for workdir in workdirs)


def job_projects(home: Home, cluster: str) -> dict[str, str]:
    """session -> `NAME-HASH (local path)` of the project its last submit from here synced."""
    state = State.open(home.state_db)
    try:
        records = state.jobs(cluster)
    finally:
        state.close()
    out = {}
    for record in records:
        name, local = PurePosixPath(record.workdir).name, _local_project(home, record.workdir)
        out[record.session] = f"{name} ({local})" if local else name
    return out


def _local_project(home: Home, remote_root: str) -> str:
    try:
        return (home.root / "projects" / PurePosixPath(remote_root).name).read_text()
    except (OSError, ValueError):
        return ""
