import pytest

from awsrun.agent import describe_duration, parse_duration
from awsrun.errors import ConfigError


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
