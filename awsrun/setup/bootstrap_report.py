"""What a run of infra/bootstrap.sh says and what it adds up to: the `==> STEP start|skip|done|FAILED`
lines and the `AWSRUN_VERIFY` line parsed (StepEvent, VerifyResult), each step's outcome and time
(StepResult), and the BootstrapReport `awsrun bootstrap` and `up` show.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from awsrun.setup.agent import AgentInstall

STEPS = ("packages", "driver", "venv", "torch", "requirements", "verify")

_EVENT = re.compile(r"^==> (?P<step>[a-z]+) (?P<action>start|skip|done|FAILED)(?: (?P<detail>.*))?$")
_VERIFY = re.compile(r"^AWSRUN_VERIFY torch=(?P<torch>\S+) cuda=(?P<cuda>True|False) "
                     r"devices=(?P<devices>\d+) name=(?P<name>.*)$")


@dataclass(frozen=True)
class StepResult:
    name: str
    outcome: str          # "done", "skip", "failed" (the script said FAILED) or "cut off" (no end line)
    seconds: float        # measured here, start line to end line; 0 for a skip
    detail: str = ""      # the skip reason, or the failure's exit/log
    run: int = 1          # which run of the script (a reboot or a lost connection starts another)


@dataclass(frozen=True)
class VerifyResult:
    torch: str
    cuda: bool
    devices: int
    name: str


@dataclass(frozen=True)
class BootstrapReport:
    host: str
    stack: str
    steps: tuple[StepResult, ...]
    verify: VerifyResult | None
    seconds: float
    log_path: Path
    reboots: int = 0
    reconnects: int = 0
    agent: AgentInstall | None = None
    note: str = ""

    def outcome(self, step: str) -> str:
        """The last outcome of `step` ("" when it never reported)."""
        found = [s.outcome for s in self.steps if s.name == step]
        return found[-1] if found else ""

    @property
    def acted(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps if s.outcome == "done")


@dataclass(frozen=True)
class StepEvent:
    step: str
    action: str           # start, skip, done, FAILED
    detail: str


def parse_event(line: str) -> StepEvent | None:
    match = _EVENT.match(line.rstrip())
    if not match or match["step"] not in STEPS:
        return None
    return StepEvent(match["step"], match["action"], match["detail"] or "")


def parse_verify(line: str) -> VerifyResult | None:
    match = _VERIFY.match(line.rstrip("\n"))
    if not match:
        return None
    return VerifyResult(match["torch"], match["cuda"] == "True", int(match["devices"]), match["name"].strip())
