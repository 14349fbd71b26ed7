"""awsrun's table in pyproject.toml, in every TOML spelling, and a pyproject without one never parsed
(nor an error of its syntax reported: it is not awsrun's file)."""
from __future__ import annotations

import pytest

from awsrun.errors import ConfigError
from awsrun.settings import load_settings


@pytest.mark.parametrize("text", [
    '[tool.awsrun]\ncluster = "exp"\n',
    '[tool]\nawsrun = { cluster = "exp" }\n',
    'tool.awsrun.cluster = "exp"\n',
    '[tool."awsrun"]\ncluster = "exp"\n',
    '[project]\nname = "x"\n\n[ tool . awsrun ]\ncluster = "exp"\n',
])
def test_every_spelling_of_the_table_is_read(tmp_path, text):
    (tmp_path / "pyproject.toml").write_text(text)
    assert load_settings(tmp_path, {}).cluster == "exp"


def test_a_pyproject_without_awsrun_is_not_parsed(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project\nthis is not TOML at all = \n")
    assert load_settings(tmp_path, {}).cluster == "default"


def test_a_broken_pyproject_that_names_awsrun_is_reported(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.awsrun\ncluster = "exp"\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(tmp_path, {})
    (tmp_path / "pyproject.toml").write_bytes(b'[tool.awsrun]\ncluster = "\xff"\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(tmp_path, {})
