import pytest

from awsrun.errors import ConfigError
from awsrun.setup.agent import describe_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("30m", 1800), ("2h", 7200), ("90s", 90), ("45", 2700), ("1.5h", 5400), ("1d", 86400),
    (None, None), ("off", None), ("0", None), ("", None),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30 parsecs", "-5m", "10s", "m30"])
def test_bad_durations_are_refused_in_one_line(text):
    with pytest.raises(ConfigError) as raised:
        parse_duration(text)
    assert "\n" not in str(raised.value)


def test_describe_duration_round_trips():
    assert [describe_duration(parse_duration(t)) for t in ("30m", "2h", "90s", "off")] == ["30m", "2h", "90s", "off"]


@pytest.mark.parametrize("text, value", [("5%", 5.0), ("5", 5.0), (" 12.5 % ", 12.5), ("100%", 100.0)])
def test_parse_percent(text, value):
    from awsrun.setup.agent import parse_percent

    assert parse_percent(text) == value


@pytest.mark.parametrize("text", ["0%", "150%", "five", "-3"])
def test_bad_percent_is_one_line(text):
    from awsrun.setup.agent import parse_percent

    with pytest.raises(ConfigError) as raised:
        parse_percent(text)
    assert "--autostop-gpu-idle" in raised.value.message and raised.value.hint


def test_gpu_idle_rides_with_the_autostop_setting_and_needs_a_duration():
    from awsrun.cluster.autostop import for_up
    from awsrun.settings import Settings
    from awsrun.setup.agent import Autostop

    setting = for_up(Settings(autostop="30m"), frozenset({"autostop"}), False, None, 5.0)
    assert setting == Autostop(1800, False, False, 5.0)
    assert Autostop.from_config(setting.as_config()) == setting
    assert "GPUs stay under 5%" in setting.describe()
    assert for_up(Settings(), frozenset(), False, setting) == setting  # a later plain `up` keeps it
    with pytest.raises(ConfigError) as raised:
        for_up(Settings(), frozenset(), False, None, 5.0)
    assert raised.value.message == "--autostop-gpu-idle needs an autostop duration"
