"""Bootstrap one node over its SSH connection: probe it, choose the driver/PyTorch stack, run the packaged
infra/bootstrap.sh with live progress, reboot through a driver install, and report what each step did.

The shell script does the work and decides what is already done (its markers and checks); this module
drives it: the probe, the upload, the run, the reboots and reconnections, and the local copy of the log.
The probe and the stack it leads to are decided in awsrun.setup.bootstrap_plan; the script's `==> STEP ...`
protocol is parsed into a BootstrapReport in awsrun.setup.bootstrap_report. A connection that drops mid-run is
reopened and the script run again (it waits for the orphaned run's lock, then resumes).
"""
from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence, TextIO

from awsrun.errors import ConfigError, RemoteError
from awsrun.remote.base import Remote, Result
from awsrun.settings import Settings
from awsrun.setup.agent import install_agent, parse_duration
from awsrun.setup.bootstrap_plan import (
    READY_FILE,
    STATE_DIR,
    Probe,
    bootstrap_argv,
    node_stack,
    packaged_script,
    parse_probe,
    probe_command,
    ready_digest,
)
from awsrun.setup.bootstrap_report import (
    STEPS,
    BootstrapReport,
    StepEvent,
    StepResult,
    VerifyResult,
    parse_event,
    parse_verify,
)

EXIT_REBOOT = 100                          # bootstrap.sh: driver installed, reboot and run again
MAX_REBOOTS = 2
MAX_RECONNECTS = 2                         # connections lost mid-run (not counting reboots)
REBOOT_POLL_S = 5.0                        # between tries to reach the new boot
TAIL_LINES = 20
LOG_FETCH_BYTES = 1_000_000                # per step log copied back

_FAILED = re.compile(r"exit=(?P<code>-?\d+)(?: log=(?P<log>.*))?")


class UnsupportedStackError(ConfigError):
    """No driver/PyTorch combination awsrun knows runs on this GPU and OS."""


class BootstrapError(RemoteError):
    """A bootstrap step failed: names the step, carries its log tail and the local log's path."""

    def __init__(self, message: str, hint: str | None = None, *, step: str | None = None,
                 remote_exit: int | None = None, tail: Sequence[str] = (), log_path: Path | None = None):
        super().__init__(message, hint)
        self.step = step
        self.remote_exit = remote_exit
        self.tail = tuple(tail)
        self.log_path = log_path


# ------------------------------------------------------------------------------------- the run
@dataclass
class _Run:
    """What one run of the script said."""

    number: int
    result: Result | None = None
    lines: list[str] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    verify: VerifyResult | None = None
    reboot_required: bool = False
    failed: StepEvent | None = None
    failed_at: int = 0

    def open_step(self) -> str | None:
        """The step that started and never ended (where a cut-off run stopped)."""
        cut = [s.name for s in self.steps if s.outcome == "cut off"]
        return cut[-1] if cut else None


class _Bootstrap:
    def __init__(self, remote: Remote, settings: Settings, log: TextIO, on_line: Callable[[str], None],
                 reconnect: Callable[[], Remote], log_path: Path):
        self.remote = remote
        self.given = remote
        self.settings = settings
        self.log = log
        self.on_line = on_line
        self.reconnect_fn = reconnect
        self.log_path = log_path
        self.runs: list[_Run] = []
        self.reboots = 0
        self.reconnects = 0
        self.probe: Probe | None = None

    # output ---------------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        """A line of ours (not the script's): to the screen and the log."""
        self.log.write(line + "\n")
        self.log.flush()
        self.on_line(line)

    def note(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()

    # one run of the script ------------------------------------------------------------------
    def run_script(self, argv: list[str]) -> _Run:
        run = _Run(number=len(self.runs) + 1)
        self.runs.append(run)
        self.note(f"# run {run.number}: {shlex.join(argv)}")

        def line(text: str) -> None:
            run.lines.append(text)
            self.log.write(text + "\n")
            self.log.flush()
            self._track(run, text)
            self.on_line(text)

        try:
            run.result = self.remote.run(argv, on_line=line)
        except RemoteError as exc:  # the transport failed while reading: same as a dropped connection
            self.note(f"# connection lost: {exc.message}")
        if run.result is not None and run.result.stderr.strip():
            self.note("# stderr:\n" + run.result.stderr.rstrip())
        for name in [n for n in run.started if n not in {s.name for s in run.steps}]:
            seconds = time.monotonic() - run.started[name]
            run.steps.append(StepResult(name, "cut off", seconds, "", run.number))
        self._copy_step_logs(run)
        return run

    def _track(self, run: _Run, text: str) -> None:
        event = parse_event(text)
        if event is not None:
            now = time.monotonic()
            if event.action == "start":
                run.started[event.step] = now
            elif event.action == "skip":
                run.steps.append(StepResult(event.step, "skip", 0.0, event.detail, run.number))
            else:
                took = now - run.started.get(event.step, now)
                outcome = "done" if event.action == "done" else "failed"
                run.steps.append(StepResult(event.step, outcome, round(took, 3), event.detail, run.number))
                if outcome == "failed":
                    run.failed, run.failed_at = event, len(run.lines)
            return
        if text.strip() == "AWSRUN_REBOOT_REQUIRED":
            run.reboot_required = True
        verify = parse_verify(text)
        if verify is not None:
            run.verify = verify

    def _copy_step_logs(self, run: _Run) -> None:
        """The steps' own logs (pip's and apt's output) into the local copy."""
        if not run.started or self.probe is None:
            return
        logs = [f"{self.probe.home}/{STATE_DIR}/logs/{name}.log" for name in run.started]
        script = "; ".join(
            f"echo {shlex.quote('---- ' + path + ' ----')}; tail -c {LOG_FETCH_BYTES} {shlex.quote(path)} 2>&1"
            for path in logs
        )
        try:
            fetched = self.remote.run(script, timeout=60)
        except RemoteError as exc:
            self.note(f"# the step logs could not be copied ({exc.message}); they stay on the instance: "
                      + ", ".join(logs))
            return
        if fetched.exit_code == -1 and not fetched.stdout:
            self.note("# the step logs could not be copied (no connection); they stay on the instance: "
                      + ", ".join(logs))
            return
        self.note(fetched.stdout.rstrip())

    # connection -----------------------------------------------------------------------------
    def alive(self) -> bool:
        try:
            return self.remote.run(":", timeout=20).exit_code == 0
        except RemoteError:
            return False

    def replace_remote(self, new: Remote) -> None:
        if self.remote is not self.given:
            _close_quietly(self.remote)
        self.remote = new

    def reconnect(self) -> None:
        self.emit(f"connection to {self.remote.name} lost: reconnecting")
        self.replace_remote(self.reconnect_fn())
        self.reconnects += 1

    def reboot(self) -> None:
        if self.remote.name == "local":
            raise BootstrapError(
                "the NVIDIA driver was installed on this machine and needs a reboot",
                hint="reboot this machine, then run `awsrun bootstrap` again", step="driver",
                log_path=self.log_path,
            )
        old_boot = self.boot_id()
        self.emit(f"rebooting {self.remote.name} to load the NVIDIA driver")
        try:
            result: Result | None = self.remote.run(["sudo", "-n", "reboot"], timeout=30)
        except RemoteError:
            result = None  # the connection dropping is what a reboot looks like
        if result is not None and result.exit_code not in (0, -1):
            raise BootstrapError(
                f"`sudo reboot` was refused on {self.remote.name} (exit {result.exit_code}): "
                f"{(result.stderr or result.stdout).strip()[-200:]}",
                hint="reboot the instance yourself (`awsrun stop`, then `awsrun start`), "
                     "then run `awsrun bootstrap` again", step="driver", log_path=self.log_path)
        self.reboots += 1
        deadline = time.monotonic() + max(self.settings.ssh_timeout, 60.0)
        while True:
            self.replace_remote(_Unreachable(self.remote.name))
            try:
                self.replace_remote(self.reconnect_fn())
                boot = self.boot_id()
            except RemoteError as exc:
                if time.monotonic() > deadline:
                    raise
                self.note(f"# not back yet: {exc.message}")
                boot = ""
            if boot and boot != old_boot:
                self.emit(f"{self.remote.name} is back (new boot)")
                return
            if time.monotonic() > deadline:
                raise RemoteError(f"{self.remote.name} did not come back from its reboot within "
                                  f"{max(self.settings.ssh_timeout, 60.0):.0f}s",
                                  hint="check it with `awsrun status`; then run `awsrun bootstrap` again")
            time.sleep(REBOOT_POLL_S)

    def boot_id(self) -> str:
        result = self.remote.run("cat /proc/sys/kernel/random/boot_id", timeout=30)
        return result.stdout.strip() if result.exit_code == 0 else ""


class _Unreachable:
    """Stands in between a reboot and the reconnection, so a stale connection is never used."""

    def __init__(self, name: str):
        self.name = name

    def run(self, *args, **kwargs) -> Result:
        raise RemoteError(f"{self.name} is rebooting")

    def close(self) -> None:
        pass


def _close_quietly(remote: Remote) -> None:
    try:
        remote.close()
    except Exception:  # noqa: BLE001 (a dead connection may fail to close; nothing to do about it)
        pass


def _failure(run: _Run, remote_name: str, log_path: Path, state_dir: str) -> BootstrapError:
    code = run.result.exit_code if run.result is not None else -1
    if run.failed is not None:
        step = run.failed.step
        failed = _FAILED.search(run.failed.detail)
        exit_text = failed["code"] if failed else str(code)
        tail = [line for line in run.lines[run.failed_at:] if line.strip()][-TAIL_LINES:]
        message = f"bootstrap step {step!r} failed (exit {exit_text}) on {remote_name}"
    else:
        step = run.open_step()
        tail = [line for line in run.lines if line.strip()][-TAIL_LINES:]
        if code == -1:
            where = f"during step {step!r}" if step else "before any step"
            message = f"bootstrap was cut off {where} on {remote_name}: the script was killed (no exit status)"
        else:
            where = f"in step {step!r}" if step else "before any step"
            message = f"bootstrap.sh exited with {code} {where} on {remote_name}"
    if tail:
        message += "; last lines:\n" + "\n".join(f"    {line}" for line in tail)
    remote_log = f"~/{state_dir}/logs/{step}.log" if step else f"~/{state_dir}/bootstrap.log"
    hint = (f"full log: {log_path} (on the instance: {remote_log}); fix the cause and run "
            "`awsrun bootstrap` again: finished steps are skipped")
    return BootstrapError(message, hint, step=step, remote_exit=code, tail=tail, log_path=log_path)


def bootstrap_node(
    remote: Remote,
    settings: Settings,
    *,
    instance_type: str | None,
    log_path: Path,
    on_line: Callable[[str], None],
    reconnect: Callable[[], Remote],
    force_steps: Sequence[str] = (),
    requirements: str | None = None,
    trust_ready: bool = False,
) -> BootstrapReport:
    """Make the node ready: driver, venv, PyTorch, requirements, verified; the agent when autostop is set.

    With `trust_ready` (awsrun up), a node whose ready stamp matches (same boot, script, arguments,
    requirements: see ready_digest) is not checked again; `awsrun bootstrap` always runs the checks.

    `requirements` defaults to `<remote_dir>/requirements.txt`, installed when it exists on the node.
    After a reboot `remote` is dead; connections opened here through `reconnect` are closed here.
    """
    unknown = [step for step in force_steps if step not in STEPS]
    if unknown:
        raise ConfigError(f"unknown bootstrap step {unknown[0]!r}", hint=f"steps: {', '.join(STEPS)}")
    idle_seconds = parse_duration(settings.autostop)  # a bad value fails before anything runs
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        job = _Bootstrap(remote, settings, log, on_line, reconnect, log_path)
        try:
            return _bootstrap(job, settings, instance_type, force_steps, requirements, idle_seconds, started,
                              trust_ready)
        finally:
            if job.remote is not job.given:
                _close_quietly(job.remote)


def _bootstrap(job: _Bootstrap, settings: Settings, instance_type: str | None, force_steps: Sequence[str],
               requirements: str | None, idle_seconds: int | None, started: float,
               trust_ready: bool = False) -> BootstrapReport:
    host = job.remote.name
    job.note(f"# awsrun bootstrap of {host} at {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    wanted_requirements = requirements or f"{settings.remote_dir.rstrip('/')}/requirements.txt"
    probe = parse_probe(job.remote.run(probe_command(wanted_requirements), timeout=60).check("probe the node").stdout)
    job.probe = probe
    stack = node_stack(instance_type, probe, settings.torch_spec)
    if not stack.supported:
        raise UnsupportedStackError(
            f"cannot bootstrap {host}: {stack.reason}",
            hint="choose another --instance-type or --ami (see docs/bootstrap.md for the supported stacks)",
        )
    job.emit(f"stack: {stack.label}")
    if stack.note:
        job.emit(f"note: {stack.note}")
    script = f"{probe.home}/{STATE_DIR}/bootstrap.sh"
    requirements_arg = wanted_requirements if probe.has_requirements else None
    digest = ready_digest(packaged_script(), bootstrap_argv(script, settings, stack, requirements=requirements_arg),
                          stack.label, probe.requirements_sha)
    ready = trust_ready and not force_steps and bool(probe.boot_id) and probe.ready == f"{probe.boot_id} {digest}"
    if ready:  # `up` on a node that is ready: one probe, no `import torch`
        job.emit("ready: nothing changed since the last bootstrap in this boot (script, settings, requirements)")
    else:
        job.remote.put_bytes(packaged_script(), script, mode=0o755)
    pending_force = list(force_steps)
    while not ready:
        argv = bootstrap_argv(script, settings, stack,
                              requirements=wanted_requirements if probe.has_requirements else None,
                              force_steps=pending_force)
        run = job.run_script(argv)
        done = {s.name for s in run.steps if s.outcome == "done"}
        pending_force = [step for step in pending_force if step not in done]
        code = run.result.exit_code if run.result is not None else -1
        if code == 0:
            break
        if code == EXIT_REBOOT or run.reboot_required:
            if job.reboots >= MAX_REBOOTS:
                raise BootstrapError(
                    f"{host} still asks for a reboot after {job.reboots} reboots: the NVIDIA driver does not load",
                    hint=f"full log: {job.log_path}; look at `nvidia-smi` and `dmesg` on the instance",
                    step="driver", remote_exit=code, log_path=job.log_path)
            job.reboot()
            continue
        if code == -1 and run.failed is None and not job.alive():
            if job.reconnects >= MAX_RECONNECTS:
                raise RemoteError(f"lost the connection to {host} {job.reconnects + 1} times during the bootstrap",
                                  hint="check the network, then run `awsrun bootstrap` again: it resumes")
            job.reconnect()
            continue
        raise _failure(run, host, job.log_path, STATE_DIR)
    if not ready:
        job.remote.run(f'printf "%s {digest}\\n" "$(cat /proc/sys/kernel/random/boot_id)" > "$HOME/{READY_FILE}"')
    agent = None
    if idle_seconds:
        agent = install_agent(job.remote, idle_seconds=idle_seconds, user=probe.user or settings.ssh_user)
        job.emit(f"autostop agent: {agent.detail}")
    return BootstrapReport(
        host=host, stack=stack.label,
        steps=tuple(s for r in job.runs for s in r.steps) if not ready
        else tuple(StepResult(step, "skip", 0.0, "ready since the last bootstrap", 0) for step in STEPS),
        verify=next((r.verify for r in reversed(job.runs) if r.verify is not None), None),
        seconds=round(time.monotonic() - started, 3), log_path=job.log_path, reboots=job.reboots,
        reconnects=job.reconnects, agent=agent, note=stack.note,
    )
