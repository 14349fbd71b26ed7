"""A job's requirements.txt (nearest the script) is pip-installed into the job's venv on submit, once per
content: the check rides on the launch round trip, and a failing install is one clear line."""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from awsrun.job import requirements
from tests.harness.clusters import ssh_cluster_on


def test_the_nearest_requirements_file_wins():
    synced = {"requirements.txt", "jobs/requirements.txt", "jobs/train.py", "tools/x.py"}
    assert requirements.find("jobs/train.py", synced) == "jobs/requirements.txt"
    assert requirements.find("tools/x.py", synced) == "requirements.txt"
    assert requirements.find("x.py", {"x.py"}) is None


def test_install_step_quotes_paths_and_lets_home_expand():
    step = requirements.install_step("~/awsrun/my proj", "jobs/requirements.txt", "d1", "~/venvs/awsrun/bin/python",
                                     "python3", "--no-index --find-links '/w h'")
    assert "py=~/venvs/awsrun/bin/python;" in step
    assert "-r ~/'awsrun/my proj'/jobs/requirements.txt" in step
    assert "--no-index --find-links '/w h' -r" in step
    assert f"|| exit {requirements.EXIT_INSTALL_FAILED};" in step


def _wheel(directory: Path, name: str, value: str) -> None:
    """A minimal pure-Python wheel, built by hand (no index or build backend needed)."""
    files = {f"{name}/__init__.py": f"VALUE = {value!r}\n".encode(),
             f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{name}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()) + f"{name}-1.0.dist-info/RECORD,,\n"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{name}-1.0.dist-info/RECORD", record)


def test_submit_installs_the_jobs_requirements_into_its_venv_once(torch_host, fleet, awsrun_home, project, tmp_path,
                                                                  cli):
    host = torch_host.host
    ssh_cluster_on(host, fleet.base, awsrun_home, tmp_path / "keys")
    _wheel(host.home / "wheels", "awsrun_reqtest", "from the wheel")
    cli.env.update({"AWSRUN_SSH_PROXY_COMMAND": fleet.proxy_command,
                    "AWSRUN_PIP_ARGS": "--no-index --find-links /home/ubuntu/wheels"})
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (project / "jobs").mkdir()
    (project / "jobs" / "requirements.txt").write_text("awsrun_reqtest==1.0\n")
    (project / "jobs" / "show.py").write_text("import awsrun_reqtest, sys\nprint(awsrun_reqtest.VALUE, sys.prefix)\n")

    first = cli("submit", "--follow", "show.py")
    assert first.exit_code == 0, first
    assert "from the wheel /home/ubuntu/venvs/awsrun" in first.stdout + first.stderr, first
    marks = list((host.home / ".awsrun" / "requirements").iterdir())
    assert len(marks) == 1
    stamp = marks[0].stat().st_mtime_ns

    again = cli("submit", "--follow", "--name", "again", "show.py")  # unchanged file: no pip run
    assert again.exit_code == 0, again
    assert marks[0].stat().st_mtime_ns == stamp

    (project / "jobs" / "requirements.txt").write_text("awsrun_reqtest==1.0\nno-such-package-anywhere==9\n")
    failed = cli("submit", "--name", "third", "show.py")
    assert failed.exit_code != 0
    assert "installing the job's requirements on" in failed.stderr and "Traceback" not in failed.stderr, failed
