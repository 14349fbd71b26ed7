"""--host USER@ADDR[:PORT] parsing: what reaches an ssh command line is a user and a host, never an option."""
from __future__ import annotations

import pytest

from awsrun.cluster.machines import parse_host
from awsrun.errors import ConfigError


@pytest.mark.parametrize("text, expected", [
    ("ubuntu@10.0.0.5", ("ubuntu", "10.0.0.5", 22)),
    ("ec2-user@gpu.example.org:2222", ("ec2-user", "gpu.example.org", 2222)),
    ("10.0.0.5:2200", ("ubuntu", "10.0.0.5", 2200)),
    ("root@[2001:db8::5]:22", ("root", "2001:db8::5", 22)),
    ("me@[::1]", ("me", "::1", 22)),
])
def test_hosts(text, expected):
    assert parse_host(text, "ubuntu") == expected


@pytest.mark.parametrize("text", [
    "-oProxyCommand=touch /tmp/x@host", "ubuntu@-oProxyCommand=x", "ubuntu@host:0", "ubuntu@host:70000",
    "ubuntu@host:ssh", "a b@host", "ubuntu@ho st", "ubuntu@", "@host", "ubuntu@host;id",
])
def test_hostile_hosts_are_refused(text):
    with pytest.raises(ConfigError, match="must look like USER@ADDRESS"):
        parse_host(text, "ubuntu")
