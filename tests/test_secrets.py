"""Secrets stay where they are: after `up`, `submit`, `logs`, `jobs`, `pull`, `status` and `ssh-config` on
the harness, with distinctive dummy AWS credentials in awsrun's environment, neither those credentials
nor the private key's material appear in awsrun's output, in AWSRUN_HOME (state.db, logs, known_hosts,
ssh_config, ...), in the project, or anywhere on the instance, and the job's environment holds no AWS
credential at all."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.harness.clusters import wait_for

SSH_CIDR = "203.0.113.7/32"
ENV_DUMP = """\
import os
out = os.environ['AWSRUN_OUTPUT_DIR']
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, 'env.txt'), 'w') as handle:
    for name, value in sorted(os.environ.items()):
        handle.write(f'{name}={value}\\n')
print('dumped')
"""


def files_under(root: Path, skip: set[Path] = frozenset()):
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in skip:
            yield path


def key_lines(private_key: Path) -> list[bytes]:
    """The private key's material: every base64 line between its BEGIN and END lines."""
    lines = private_key.read_bytes().splitlines()
    body = [line.strip() for line in lines if line and not line.startswith(b"-----")]
    assert body and all(len(line) >= 16 for line in body[:-1])
    return [line for line in body if len(line) >= 16]


@pytest.mark.slow
def test_no_credential_or_key_material_outside_its_place(cli, ec2, fleet, project, awsrun_home):
    tag = uuid.uuid4().hex
    secrets = {"AWS_ACCESS_KEY_ID": f"AKIALEAK{tag[:12].upper()}", "AWS_SECRET_ACCESS_KEY": f"leak-secret-{tag}",
               "AWS_SESSION_TOKEN": f"leak-token-{tag}"}
    cli.env.update(secrets)
    outputs = []

    def run(*args: str):
        result = cli(*args)
        assert result.exit_code == 0, result
        outputs.append((result.stdout + result.stderr).encode())
        return result

    run("up", "--ssh-cidr", SSH_CIDR, "--no-bootstrap")
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "envdump.py").write_text(ENV_DUMP)
    run("submit", "envdump.py")
    run("logs", "-f", "work")
    run("jobs")
    run("pull", "work")
    run("status", "--json")
    run("ssh-config")
    (instance_id,) = fleet.bindings()["instances"]
    host = fleet.host_of(instance_id)
    wait_for(lambda: (project / "runs" / "work" / "env.txt").exists(), what="the pulled env dump")

    job_env = (project / "runs" / "work" / "env.txt").read_text()
    assert not [line for line in job_env.splitlines() if line.startswith("AWS_")], job_env

    private_keys = [p for p in (awsrun_home / "keys").iterdir() if p.suffix != ".pub"]
    assert len(private_keys) == 1, private_keys
    needles = [value.encode() for value in secrets.values()] + key_lines(private_keys[0])
    places = {
        "awsrun's output": outputs,
        "AWSRUN_HOME": [p.read_bytes() for p in files_under(awsrun_home, {private_keys[0]})],
        "the project": [p.read_bytes() for p in files_under(project)],
        "the instance": [p.read_bytes() for p in files_under(host.home)],
    }
    assert (awsrun_home / "ssh_config").exists() and (awsrun_home / "state.db").exists()
    assert len(places["the instance"]) > 3  # the synced project, the job's files, authorized_keys ...
    leaks = [(where, needle[:12]) for where, blobs in places.items() for blob in blobs for needle in needles
             if needle in blob]
    assert leaks == []
