"""The CLI skeleton: verbs listed, version, and bad input answered in one line without a traceback."""
from __future__ import annotations

import json
import os

from awsrun import __version__

VERBS = ("up", "status", "submit", "attach", "logs", "pull", "stop", "start", "down", "ssh")


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0, result
    assert "Traceback" not in result.stderr, result
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("error: "), result
    for fragment in fragments:
        assert fragment in result.stderr, result


def test_help_lists_every_verb(cli):
    result = cli("--help")
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert set(VERBS) <= listed


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_help_does_not_import_heavy_modules(cli):
    probe = ("import sys; from awsrun.cli import cli; "
             "import click.testing as t; t.CliRunner().invoke(cli, ['--help']); "
             "print(sorted(m for m in ('boto3','botocore','paramiko','fabric','libtmux','rich','torch') if m in sys.modules))")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", probe], env=cli.environment(), capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_unknown_verb(cli):
    assert_one_line_error(cli("frobnicate"), "No such command 'frobnicate'")


def test_malformed_config_file(cli, project):
    (project / "awsrun.toml").write_text("instance_type = = 3\n")
    assert_one_line_error(cli("config"), "awsrun.toml: invalid TOML")


def test_unreadable_awsrun_home(cli, tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where a directory should be")
    assert_one_line_error(cli("config", env={"AWSRUN_HOME": str(blocked / "home")}), "AWSRUN_HOME", "is not usable")


def test_config_shows_resolved_settings(cli, project):
    (project / "awsrun.toml").write_text('instance_type = "p2.xlarge"\n')
    result = cli("config", "--json", env={"AWSRUN_VOLUME_GB": "42"})
    assert result.exit_code == 0, result
    data = json.loads(result.stdout)
    assert data["settings"]["instance_type"] == "p2.xlarge"
    assert data["settings"]["volume_gb"] == 42
    assert os.stat(data["home"]).st_mode & 0o777 == 0o700
