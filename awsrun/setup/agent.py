"""Client side of the instance agent (infra/awsrun-agent.py): install it with its autostop setting, and
read its status. The agent itself needs no AWS credentials: it halts the OS, and the instance's
shutdown behaviour (stop, or terminate for --autostop-down) does the rest."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources

from awsrun.errors import ConfigError
from awsrun.remote.base import Remote

AGENT_DIR = ".awsrun/agent"
UNITS = ("awsrun-agent.service", "awsrun-agent.timer", "awsrun-agent-boot.service")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$", re.IGNORECASE)
_SCALE = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(text: str | None) -> int | None:
    """'30m', '2h', '90s', '45' (minutes) -> seconds; None, '', 'off', and zero in any unit ('0', '0m',
    '0s', '0h') -> None (autostop off)."""
    if text is None or text.strip().lower() in ("", "off", "none"):
        return None
    seconds = duration_seconds(text)
    if seconds is None:
        raise ConfigError(f"autostop {text!r} is not a duration: use e.g. 30m, 2h, 90s, or off")
    if seconds == 0:
        return None
    if seconds < 60:
        raise ConfigError(f"autostop {text!r} is shorter than a minute: the agent checks every 30 seconds")
    return int(seconds)


def duration_seconds(text: str) -> float | None:
    """'30m', '2h', '90s', '45' (minutes) -> seconds; None when it is not a duration."""
    match = _DURATION.match(text)
    return float(match.group(1)) * _SCALE[(match.group(2) or "m").lower()] if match else None


def parse_percent(text: str, flag: str = "--autostop-gpu-idle") -> float:
    """'5%' or '5' -> 5.0, a GPU utilisation threshold above 0 and at most 100. `flag` is the option
    the value came from, as the command that read it spells it (`up`'s by default)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise ConfigError(f"{flag} {text!r} is not a percentage above 0 and at most 100",
                          hint=f"e.g. {flag} 5%")
    return value


def describe_duration(seconds: int | None) -> str:
    if not seconds:
        return "off"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


CONFIG_KEY = "autostop"  # where a cluster's record (awsrun.state) keeps its Autostop.as_config()


@dataclass(frozen=True)
class Autostop:
    """A cluster's autostop setting, as recorded in its config (`autostop`) and sent to the agent."""

    idle_seconds: int | None
    down: bool = False              # terminate instead of stop (InstanceInitiatedShutdownBehavior)
    count_ssh_users: bool = False   # a logged-in SSH user keeps the instance awake
    gpu_idle_percent: float | None = None  # a job whose GPUs all stay below this counts as idle

    def __post_init__(self) -> None:
        if self.down and not self.idle_seconds:
            raise ConfigError("--autostop-down needs an autostop duration",
                              hint="e.g. `--autostop 30m --autostop-down` (or `awsrun autostop 30m --down`)")
        if self.gpu_idle_percent is not None and not self.idle_seconds:
            raise ConfigError("--autostop-gpu-idle needs an autostop duration",
                              hint="e.g. `--autostop 30m --autostop-gpu-idle 5%`")

    @property
    def shutdown_behavior(self) -> str:
        return "terminate" if self.down else "stop"

    def describe(self) -> str:
        if not self.idle_seconds:
            return "off"
        then = "terminate" if self.down else "stop"
        who = "jobs or SSH users" if self.count_ssh_users else "jobs"
        gpu = (f" (a job whose GPUs stay under {self.gpu_idle_percent:g}% counts as idle)"
               if self.gpu_idle_percent is not None else "")
        return f"{then} after {describe_duration(self.idle_seconds)} without {who}{gpu}"

    def as_config(self) -> dict:
        config = {"idle_seconds": self.idle_seconds, "down": self.down, "count_ssh_users": self.count_ssh_users}
        if self.gpu_idle_percent is not None:
            config["gpu_idle_percent"] = self.gpu_idle_percent
        return config

    @classmethod
    def from_config(cls, raw: object) -> "Autostop | None":
        if not isinstance(raw, dict):
            return None
        idle = raw.get("idle_seconds")
        gpu = raw.get("gpu_idle_percent")
        return cls(int(idle) if idle else None, bool(raw.get("down")) and bool(idle), bool(raw.get("count_ssh_users")),
                   float(gpu) if isinstance(gpu, (int, float)) and idle else None)


@dataclass(frozen=True)
class AgentInstall:
    scheduled: bool
    detail: str


def _packaged(name: str) -> bytes:
    return resources.files("awsrun").joinpath("data", name).read_bytes()


def install_agent(remote: Remote, *, idle_seconds: int | None, count_ssh_users: bool = False,
                  user: str = "ubuntu", gpu_idle_percent: float | None = None) -> AgentInstall:
    """Copy the agent and its config; schedule it with systemd where the host has systemd."""
    home = remote.run('printf %s "$HOME"').check("read $HOME").stdout.strip()
    remote.run(["mkdir", "-p", f"{home}/{AGENT_DIR}"]).check("create the agent directory")
    remote.put_bytes(_packaged("awsrun-agent.py"), f"{home}/{AGENT_DIR}/awsrun-agent.py", mode=0o755)
    config: dict = {"idle_seconds": idle_seconds, "count_ssh_users": count_ssh_users}
    if gpu_idle_percent is not None:
        config["gpu_idle_percent"] = gpu_idle_percent
    remote.put_bytes(json.dumps(config).encode(), f"{home}/{AGENT_DIR}/config.json")
    if remote.run("test -d /run/systemd/system").exit_code != 0:
        return AgentInstall(False, "no systemd on this host: the agent is installed but not scheduled")
    steps = []
    for unit in UNITS:
        text = _packaged(unit).decode().replace("/home/ubuntu", home).replace("User=ubuntu", f"User={user}")
        staged = f"{home}/{AGENT_DIR}/{unit}"
        remote.put_bytes(text.encode(), staged)
        steps.append(shlex.join(["sudo", "install", "-m", "0644", staged, f"/etc/systemd/system/{unit}"]))
    steps.append("sudo systemctl daemon-reload")
    steps.append("sudo systemctl enable --now awsrun-agent.timer")
    steps.append("sudo systemctl enable awsrun-agent-boot.service")
    remote.run(" && ".join(steps)).check("schedule the awsrun agent with systemd")
    return AgentInstall(True, f"autostop {describe_duration(idle_seconds)}, checked every 30s by systemd")


def agent_status(remote: Remote) -> dict | None:
    result = remote.run(f"test -f ~/{AGENT_DIR}/awsrun-agent.py && python3 ~/{AGENT_DIR}/awsrun-agent.py status")
    if result.exit_code != 0:
        return None
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None
