"""Runs the real `awsrun` CLI as a subprocess, wired to the harness: its own AWSRUN_HOME, the moto
endpoint, the ProxyCommand to the loopback hosts, dummy credentials, and the loopback-only guard."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

GUARD = Path(__file__).parent / "guard"
REPO = Path(__file__).resolve().parents[2]

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def guarded_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for any Python subprocess of the tests: loopback-only networking, no real AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AWSRUN_"))}
    env.update(AWS_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD), str(REPO)])
    env["LC_ALL"] = "C.UTF-8"
    env.update(extra or {})
    return env


@dataclass
class CliResult:
    args: list[str]
    exit_code: int
    stdout: str
    stderr: str

    def __repr__(self) -> str:
        return f"CliResult({self.args!r}, exit={self.exit_code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


@dataclass
class AwsrunCli:
    home: Path
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return guarded_env({"AWSRUN_HOME": str(self.home), **self.env, **(extra or {})})

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "awsrun", *args]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120,
                 cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
        completed = subprocess.run(
            self.argv(*args), cwd=cwd or self.cwd, env=self.environment(env), input=input,
            capture_output=True, text=True, timeout=timeout,
        )
        return CliResult(list(args), completed.returncode, completed.stdout, completed.stderr)

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=self.cwd, env=self.environment(), **kwargs)


def wait_for_pause(process: subprocess.Popen, phase: str, timeout: float = 60) -> None:
    """Wait until a CLI started with AWSRUN_TEST_PAUSE_AT=PHASE says it is paused there (on stderr)."""
    import os
    import select
    import time

    # Raw reads: a buffered readline could hold the marker while select() sees an empty pipe.
    marker, seen, deadline = f"awsrun-test-pause: {phase.split('#')[0]}".encode(), b"", time.monotonic() + timeout
    while marker not in seen:
        assert time.monotonic() < deadline and process.poll() is None, f"no pause marker: {seen!r}"
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        if ready:
            seen += os.read(process.stderr.fileno(), 65536)
