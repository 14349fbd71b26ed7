"""Hostile or odd input, property-based: every session name, cluster name, CIDR, instance type, env pair
and TOML value either works or is refused with a one-line error (exit 2 for a bad input), never a
traceback or awsrun's internal-error exit (70).

Twice over: through the pure validators, and through the real CLI in this process (`awsrun.cli.main`,
the one place errors become output, under click's CliRunner isolation) with a temp AWSRUN_HOME. The CLI
never reaches a cloud: the commands chosen fail before any call (no cluster of that name), or reach an
EC2 endpoint on a loopback port that refuses connections (one attempt), or the harness's moto endpoint
for read-only look-ups (doctor).
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from awsrun.cli import INTERNAL_ERROR, main
from awsrun.cluster.machines import parse_host
from awsrun.errors import AwsrunError, ConfigError
from awsrun.job.environment import validate_env
from awsrun.job.interactive import parse_ports
from awsrun.job.tmux import validate_session_name
from awsrun.providers.aws_network_requests import parse_cidr
from awsrun.providers.aws_requests import validate_cluster_name
from awsrun.settings import SETTING_NAMES, load_settings
from awsrun.setup.agent import parse_duration
from awsrun.state import ClusterRecord, InstanceRecord, State

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
CLI = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

# Any text a shell, a config file or a mangled argv (undecodable bytes arrive as lone surrogates) can hand
# over, and text close enough to the valid forms that both sides of every rule are reached.
anything = st.text(max_size=80)
name_like = st.from_regex(r"[A-Za-z0-9._:* -][A-Za-z0-9_.:*\n -]{0,70}", fullmatch=True)
names = st.one_of(anything, name_like, st.sampled_from(["-", "--help", "a" * 64, "a" * 65, "a.b", "x:y", "=x"]))
ipv4 = st.builds(lambda a, p: f"{ipaddress.IPv4Address(a)}/{p}", st.integers(0, 2**32 - 1), st.integers(0, 40))
ipv6 = st.builds(lambda a, p: f"{ipaddress.IPv6Address(a)}/{p}", st.integers(0, 2**128 - 1), st.integers(0, 130))
cidrs = st.one_of(anything, ipv4, ipv6, st.from_regex(r"[0-9./: a-f]{0,25}", fullmatch=True))
env_pairs = st.one_of(anything, st.builds(lambda n, v: f"{n}={v}", st.one_of(anything, name_like), anything))
instance_types = st.one_of(anything, st.from_regex(r"[a-z0-9]{1,5}\.[a-z0-9]{0,10}", fullmatch=True),
                           st.sampled_from(["p2.xlarge", "g4dn.xlarge", "p9.xlarge", "hpc7g.4xlarge", "*", "g5.*"]))
toml_scalars = st.one_of(st.text(max_size=30), st.integers(-2**63, 2**63 - 1), st.booleans(),
                         st.floats(allow_nan=True, allow_infinity=True))
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=6)


def one_line_refusal(call, *args) -> str | None:
    """The message of an AwsrunError (one line, and its hint one line), or None when the call works."""
    try:
        call(*args)
    except AwsrunError as exc:
        assert "\n" not in exc.message and "\n" not in (exc.hint or ""), exc.message
        assert isinstance(exc, ConfigError)
        return exc.message
    return None


# --- the pure validators ------------------------------------------------------------------------------

@FAST
@given(names)
@example("work")
@example("a\nb")
def test_session_names(name):
    if one_line_refusal(validate_session_name, name) is None:
        # what tmux can take as a target and a shell word needs no quoting for
        assert name[0].isascii() and name[0].isalnum() and len(name) <= 64
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


@FAST
@given(names)
def test_cluster_names(name):
    if one_line_refusal(validate_cluster_name, name) is None:
        # fits every EC2 name and tag, and holds no filter wildcard (a '*' must never match every cluster)
        assert 1 <= len(name) <= 40 and not set(name) & set("*?/ \n\\")
        assert name.isascii()


@FAST
@given(cidrs)
@example("10.0.0.1/8")
@example("0.0.0.0/0")
def test_cidrs(text):
    result = None
    if one_line_refusal(parse_cidr, text) is None:
        result = parse_cidr(text)
        assert str(ipaddress.ip_network(result)) == result  # canonical, and EC2 takes it as written
        assert parse_cidr(result) == result


@FAST
@given(st.lists(env_pairs, max_size=4))
def test_env_pairs(pairs):
    if one_line_refusal(validate_env, pairs) is None:
        env = validate_env(pairs)
        for name, value in env.items():
            assert name.isidentifier() and name.isascii() and "\0" not in value


@FAST
@given(st.one_of(anything, st.from_regex(r"\s*[0-9.]{1,6}\s*(s|m|h|d|min|sec|hr)?\s*", fullmatch=True)))
def test_autostop_durations(text):
    if one_line_refusal(parse_duration, text) is None:
        seconds = parse_duration(text)
        assert seconds is None or seconds >= 60


@FAST
@given(st.lists(st.one_of(anything, st.from_regex(r"[0-9]{1,6}(:[0-9]{1,6})?", fullmatch=True)), max_size=3))
def test_tunnel_ports(specs):
    if one_line_refusal(parse_ports, specs) is None:
        assert all(0 < port < 65536 for pair in parse_ports(specs) for port in pair)


@FAST
@given(st.one_of(anything, st.from_regex(r"([a-z]{1,5}@)?[0-9a-z.:\[\]-]{1,20}(:[0-9]{1,6})?", fullmatch=True)))
def test_existing_host_specs(text):
    if one_line_refusal(parse_host, text, "ubuntu") is None:
        user, host, port = parse_host(text, "ubuntu")
        assert not host.startswith("-") and not user.startswith("-") and 0 < port < 65536
        assert not any(c.isspace() for c in user + host)


@FAST
@given(st.dictionaries(st.sampled_from(SETTING_NAMES), toml_values, max_size=4))
def test_toml_values_through_the_settings(table):
    """What tomllib can hand over for each known setting (strings, numbers, NaN, bools, tables...)."""
    def load():
        load_settings(Path("/nonexistent"), {}, {})  # defaults alone always load
        from awsrun import settings as module

        fields = {f.name: f for f in module.dataclasses.fields(module.Settings)}
        return {name: module._coerce(fields[name], value, "awsrun.toml") for name, value in table.items()}

    one_line_refusal(load)


# --- the real CLI, in process -------------------------------------------------------------------------

@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def assert_clean(self) -> None:
        """Worked, or one `error:` line (and one `hint:` line) at the end of stderr; never a traceback."""
        assert self.code != INTERNAL_ERROR, self
        assert "Traceback" not in self.stderr + self.stdout, self
        if self.code == 0:
            return
        lines = self.stderr.splitlines()
        errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
        assert len(errors) == 1, self
        tail = lines[errors[0] + 1:]
        assert tail == [] or (len(tail) == 1 and tail[0].startswith("  hint: ")), self


@dataclass
class InProcessCli:
    home: Path
    project: Path
    env: dict

    def __call__(self, *args: str, config: str | None = None) -> Outcome:
        (self.project / "awsrun.toml").write_text(config if config is not None else "")
        runner = CliRunner()
        cwd = os.getcwd()
        code = 0
        with runner.isolation(env={"AWSRUN_HOME": str(self.home), **self.env}) as streams:
            os.chdir(self.project)
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os.chdir(cwd)
            out, err = streams[0].getvalue(), streams[1].getvalue()
        return Outcome(code, out.decode(errors="replace"), err.decode(errors="replace"))


def _refused_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens: every AWS call is refused at once


@pytest.fixture(scope="module")
def incli(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-cli")
    project, home = base / "project", base / "home"
    project.mkdir()
    home.mkdir(mode=0o700)
    (project / "train.py").write_text("print('hi')\n")
    state = State.open(home / "state.db")  # a local cluster under another name: no cloud is ever scanned
    state.put_cluster(ClusterRecord("known-local", "local"))
    state.put_instance(InstanceRecord("local", "known-local", "running"))
    state.close()
    return InProcessCli(home, project, {"AWS_ENDPOINT_URL": _refused_endpoint(), "AWS_MAX_ATTEMPTS": "1",
                                        "AWSRUN_CALLER_IP_URL": "off", "AWSRUN_DEBUG": None})


def _valid(check, *args) -> bool:
    try:
        check(*args)
    except AwsrunError:
        return False
    return True


@CLI
@given(names, st.lists(env_pairs, max_size=2))
@example("ok-name", ["A=b c"])
def test_submit_session_names_and_env_pairs_through_the_cli(incli, name, pairs):
    assume(name and not name.startswith("-"))  # click reads a leading '-' as an option: its own one-line error
    env_args = [word for pair in pairs for word in ("--env", pair)]
    outcome = incli("submit", "--name", name, *env_args, "--cluster", "nowhere", "train.py")
    outcome.assert_clean()
    if _valid(validate_session_name, name) and _valid(validate_env, pairs):
        assert outcome.code == 7 and "no cluster named 'nowhere'" in outcome.stderr  # got past every check
    else:
        assert outcome.code == 2


@CLI
@given(names)
def test_cluster_names_through_the_cli(incli, name):
    assume(name and not name.startswith("-"))
    outcome = incli("status", "--cluster", name)
    outcome.assert_clean()
    assert outcome.code == (7 if _valid(validate_cluster_name, name) else 2)


@CLI
@given(cidrs)
@example("203.0.113.7/32")
def test_ssh_cidrs_through_up(incli, text):
    assume(text and not text.startswith("-"))
    outcome = incli("up", "--cluster", "cidr-test", "--ssh-cidr", text, "--no-bootstrap")
    outcome.assert_clean()
    if _valid(parse_cidr, text):
        assert outcome.code == 4 and "cannot reach AWS" in outcome.stderr  # valid: on to the (refused) cloud
    else:
        assert outcome.code == 2 and "--ssh-cidr" in outcome.stderr


@CLI
@given(st.dictionaries(st.sampled_from(SETTING_NAMES + ("not_a_setting",)), toml_values, max_size=4))
def test_toml_values_through_the_cli(incli, table):
    config = "\n".join(f"{k} = {_toml(v)}" for k, v in table.items())
    outcome = incli("config", "--json", config=config)
    outcome.assert_clean()
    assert outcome.code in (0, 2)


@CLI
@given(st.text(max_size=200))
@example('cluster = "a"\ncluster = "b"')
@example("[tool]\nawsrun = 3")
def test_any_config_file_text_through_the_cli(incli, text):
    outcome = incli("config", "--json", config=text)
    outcome.assert_clean()
    assert outcome.code in (0, 2)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(instance_types)
@example("p2.xlarge")
def test_instance_types_through_doctor(ec2_server, incli, instance_type):
    """doctor looks the type up in the catalog, EC2's offerings and the quotas (moto, read-only)."""
    assume(instance_type and not instance_type.startswith("-"))
    saved = dict(incli.env)
    incli.env.update(AWS_ENDPOINT_URL=ec2_server.url)
    try:
        outcome = incli("doctor", "--instance-type", instance_type, "--region", "us-east-1", "--json")
    finally:
        incli.env.clear()
        incli.env.update(saved)
    outcome.assert_clean()
    assert outcome.code in (0, 2, 8)


def _toml(value) -> str:
    """A TOML literal for what the strategy makes (NaN and inf included; TOML has them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") if value in (float("inf"), float("-inf")) \
            else repr(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                             for c in value if not 0xD800 <= ord(c) <= 0xDFFF) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def test_a_trailing_newline_never_passes_a_validator():
    """`$` in a regex matches before a final newline: every validator anchors with \\Z instead."""
    from awsrun.cluster.machines import parse_host
    from awsrun.errors import ConfigError
    from awsrun.job import environment, tmux
    from awsrun.providers.aws_requests import validate_cluster_name
    from awsrun.settings import load_settings

    checks = [
        lambda: tmux.validate_session_name("work\n"),
        lambda: environment.validate_env(["NAME\n=1"]),
        lambda: validate_cluster_name("default\n"),
        lambda: parse_host("ubuntu@host\n", "ubuntu"),
        lambda: load_settings(Path("/nonexistent"), {}, {"instance_type": "g4dn.xlarge\n"}),
        lambda: load_settings(Path("/nonexistent"), {}, {"instance_type": "g5.xlarge, g4dn.xlarge\n"}),
        lambda: load_settings(Path("/nonexistent"), {}, {"regions": "us-east-1,us-west-2\n"}),
    ]
    for check in checks:
        with pytest.raises(ConfigError):
            check()
