from __future__ import annotations

from pathlib import Path

import pytest

from awsrun.errors import ConfigError
from awsrun.settings import SETTING_NAMES, Settings, find_project_root, load_settings


def test_defaults_without_any_source(tmp_path):
    assert load_settings(tmp_path, environ={}) == Settings()


def test_precedence_file_then_env_then_flags(tmp_path):
    (tmp_path / "awsrun.toml").write_text('instance_type = "p2.xlarge"\nvolume_gb = 50\nspot = true\n')
    assert load_settings(tmp_path, {}).instance_type == "p2.xlarge"
    env = {"AWSRUN_INSTANCE_TYPE": "g5.xlarge", "AWSRUN_VOLUME_GB": "70"}
    settings = load_settings(tmp_path, env)
    assert (settings.instance_type, settings.volume_gb, settings.spot) == ("g5.xlarge", 70, True)
    flagged = load_settings(tmp_path, env, {"instance_type": "g6.xlarge", "volume_gb": None})
    assert (flagged.instance_type, flagged.volume_gb) == ("g6.xlarge", 70)


def test_tool_awsrun_table_in_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.awsrun]\ncluster = "exp"\n')
    assert load_settings(tmp_path, {}).cluster == "exp"


def test_awsrun_toml_wins_over_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.awsrun]\ncluster = "from-pyproject"\n')
    (tmp_path / "awsrun.toml").write_text('cluster = "from-awsrun-toml"\n')
    assert load_settings(tmp_path, {}).cluster == "from-awsrun-toml"


@pytest.mark.parametrize(
    "content, message",
    [
        ("instance_type = ", "invalid TOML"),
        ('colour = "blue"', "unknown setting 'colour'"),
        ("volume_gb = -5", "volume_gb must be a positive whole number"),
        ('volume_gb = "lots"', "volume_gb must be a whole number"),
        ('spot = "maybe"', "spot must be true or false"),
        ("max_price = 0", "max_price must be a positive number"),
        ("cluster = [1, 2]", "cluster must be a string"),
    ],
)
def test_bad_config_files_give_one_line_errors(tmp_path, content, message):
    (tmp_path / "awsrun.toml").write_text(content + "\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path, {})
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="AWSRUN_SPOT: spot must be true or false"):
        load_settings(tmp_path, {"AWSRUN_SPOT": "perhaps"})


def test_project_root_is_found_from_a_subdirectory(tmp_path):
    (tmp_path / "awsrun.toml").write_text("")
    nested = tmp_path / "jobs" / "deep"
    nested.mkdir(parents=True)
    assert find_project_root(nested) == tmp_path


def test_every_setting_has_a_description():
    from awsrun.settings import describe_settings

    rows = describe_settings()
    assert [name for name, _, _ in rows] == list(SETTING_NAMES)
    assert all(doc for _, _, doc in rows)


@pytest.mark.parametrize("typed, hint", [
    ("us-east1", "did you mean us-east-1?"),
    ("US-WEST-2", "did you mean us-west-2?"),
    ("eu-west-1\n", "did you mean eu-west-1?"),
    ("nowhere-1", "`awsrun doctor` shows the region each source gives"),
])
def test_a_region_that_cannot_be_one_is_refused_before_any_connection(tmp_path, typed, hint):
    """Without the check, boto3 took `us-east1` and the user met a failed connection to ec2.us-east1."""
    for flags, environ, source in (({"region": typed}, {}, "--region"), ({}, {"AWSRUN_REGION": typed}, "AWSRUN_REGION")):
        with pytest.raises(ConfigError) as raised:
            load_settings(tmp_path, environ, flags)
        assert raised.value.message == f"{source}: {typed!r} is not an AWS region (like us-east-1)"
        assert raised.value.hint == hint


@pytest.mark.parametrize("region", ["us-east-1", "ap-southeast-4", "us-gov-west-1", "cn-north-1", "xx-newplace-9",
                                    "eusc-de-east-1", "mars-north-12"])
def test_every_region_spelled_like_one_is_taken(tmp_path, region):
    assert load_settings(tmp_path, {}, {"region": region}).region == region


def test_every_region_botocore_knows_is_taken(tmp_path):
    from awsrun.providers.aws_clients import known_regions

    regions = known_regions()
    assert len(regions) > 30 and "us-east-1" in regions
    for region in regions:
        assert load_settings(tmp_path, {}, {"region": region, "regions": region}).region == region
