"""Bootstrap one node over its SSH connection: probe it, choose the driver/PyTorch stack, run the packaged
infra/bootstrap.sh with live progress, reboot through a driver install, and report what each step did.

The shell script does the work and decides what is already done (its markers and checks); this module
drives it: one probe round trip (home, user, boot id, /etc/os-release, GPU), the upload, the run, the
`==> STEP ...` protocol parsed into a BootstrapReport, and the local copy of the log. A connection that
drops mid-run is reopened and the script run again (it waits for the orphaned run's lock, then resumes).
"""
from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence, TextIO

from awsrun import catalog
from awsrun.agent import AgentInstall, install_agent, parse_duration
from awsrun.errors import ConfigError, RemoteError
from awsrun.remote.base import Remote, Result
from awsrun.settings import Settings
from awsrun.stack import Stack, choose_stack

STEPS = ("packages", "driver", "venv", "torch", "requirements", "verify")
STATE_DIR = ".awsrun/bootstrap"            # under the login user's home; the script's default
READY_FILE = f"{STATE_DIR}/ready"          # "BOOT_ID DIGEST" of the last bootstrap that finished
EXIT_REBOOT = 100                          # bootstrap.sh: driver installed, reboot and run again
MAX_REBOOTS = 2
MAX_RECONNECTS = 2                         # connections lost mid-run (not counting reboots)
REBOOT_POLL_S = 5.0                        # between tries to reach the new boot
TAIL_LINES = 20
LOG_FETCH_BYTES = 1_000_000                # per step log copied back

_EVENT = re.compile(r"^==> (?P<step>[a-z]+) (?P<action>start|skip|done|FAILED)(?: (?P<detail>.*))?$")
_VERIFY = re.compile(r"^AWSRUN_VERIFY torch=(?P<torch>\S+) cuda=(?P<cuda>True|False) "
                     r"devices=(?P<devices>\d+) name=(?P<name>.*)$")
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


# ---------------------------------------------------------------------------------- pure parts
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


@dataclass(frozen=True)
class Probe:
    home: str
    user: str
    boot_id: str
    os_release: str
    gpu: tuple[str, str] | None        # (name, compute capability) from a working nvidia-smi
    pci_gpus: tuple[str, ...]          # NVIDIA display controllers as lspci names them
    nvidia_on_pci: bool                # sysfs saw one (also true when lspci is missing)
    has_requirements: bool
    ready: str = ""                    # the stamp a finished bootstrap left: "BOOT_ID DIGEST" (see ready_digest)
    requirements_sha: str = ""


def _shell_path(path: str) -> str:
    """A path for the remote shell: "~/x" becomes "$HOME"/x, everything else is quoted as is."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def probe_command(requirements: str) -> str:
    """Everything the client needs to know about the node, in one round trip; also creates the state dir."""
    return "\n".join([
        f'mkdir -p "$HOME/{STATE_DIR}"',
        'printf "home=%s\\nuser=%s\\n" "$HOME" "$(id -un)"',
        'printf "boot_id=%s\\n" "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"',
        f"if [ -f {_shell_path(requirements)} ]; then echo requirements=yes; "
        f"printf 'requirements_sha=%s\\n' \"$(sha256sum < {_shell_path(requirements)} | cut -c1-64)\"; fi",
        f'printf "ready=%s\\n" "$(cat "$HOME/{READY_FILE}" 2>/dev/null)"',
        "for d in /sys/bus/pci/devices/*; do",
        '  [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue',
        '  case "$(cat "$d/class" 2>/dev/null)" in 0x03*) echo nvidia_on_pci=yes; break ;; esac',
        "done",
        "echo '[gpu]'",
        "nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true",
        "echo '[lspci]'",
        "lspci -d 10de: 2>/dev/null | grep -E 'VGA compatible controller|3D controller|Display controller' || true",
        "echo '[os-release]'",
        "cat /etc/os-release 2>/dev/null || true",
    ])


def parse_probe(stdout: str) -> Probe:
    values: dict[str, str] = {}
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in stdout.splitlines():
        if line in ("[gpu]", "[lspci]", "[os-release]"):
            current = line.strip("[]")
            sections[current] = []
        elif current == "":
            key, _, value = line.partition("=")
            values[key] = value
        else:
            sections[current].append(line)
    gpu = None
    smi = [line for line in sections.get("gpu", []) if line.strip()]
    if smi and "," in smi[0]:
        name, _, cc = smi[0].rpartition(",")
        if re.fullmatch(r"\s*\d+\.\d+\s*", cc):
            gpu = (name.strip(), cc.strip())
    pci = tuple(line.strip() for line in sections.get("lspci", []) if line.strip())
    if not values.get("home"):
        raise RemoteError(f"probing the node gave no $HOME: {stdout[-300:]!r}")
    return Probe(
        home=values["home"], user=values.get("user", ""), boot_id=values.get("boot_id", ""),
        os_release="\n".join(sections.get("os-release", [])), gpu=gpu, pci_gpus=pci,
        nvidia_on_pci=values.get("nvidia_on_pci") == "yes" or bool(pci), has_requirements="requirements" in values,
        ready=values.get("ready", ""), requirements_sha=values.get("requirements_sha", ""),
    )


def _pci_model(line: str) -> str:
    """'00:1e.0 3D controller: NVIDIA Corporation GK210GL [Tesla K80] (rev a1)' -> 'Tesla K80'."""
    bracket = re.search(r"\[([^\]]+)\]\s*(\(rev [^)]*\))?\s*$", line)
    if bracket:
        return bracket.group(1)
    return line.split(":", 2)[-1].strip()


def node_stack(instance_type: str | None, probe: Probe, torch_spec: str | None) -> Stack:
    """The catalog knows EC2 types; any other host is identified by what the probe saw."""
    spec = catalog.lookup(instance_type) if instance_type else None
    if spec is not None:
        model, cc = (spec.gpu_model, spec.compute_capability) if spec.has_gpu else (None, None)
    elif probe.gpu is not None:
        model, cc = probe.gpu
    elif probe.pci_gpus:
        model, cc = _pci_model(probe.pci_gpus[0]), None
    elif probe.nvidia_on_pci:
        model, cc = "unidentified NVIDIA GPU (no lspci)", None
    else:
        model, cc = None, None
    return choose_stack(model, cc, probe.os_release or "", torch_spec)


def bootstrap_argv(script: str, settings: Settings, stack: Stack, *, requirements: str | None = None,
                   force_steps: Sequence[str] = ()) -> list[str]:
    argv = ["bash", script, "--venv", settings.venv, "--torch-spec", stack.torch_spec]
    if stack.torch_index_url:
        argv += ["--torch-index-url", stack.torch_index_url]
    if settings.pip_args:
        argv += ["--pip-args", settings.pip_args]
    if requirements:
        argv += ["--requirements", requirements]
    if stack.driver_packages:
        argv += ["--driver-packages", " ".join(stack.driver_packages)]
    for step in force_steps:
        argv += ["--force-step", step]
    return argv


def ready_digest(script: bytes, argv: Sequence[str], stack: str, requirements_sha: str) -> str:
    """What a finished bootstrap stamps on the node, with the boot id: the same script run with the same
    arguments for the same stack and requirements, in the same boot, has nothing left to do (a reboot,
    a new awsrun, other settings or an edited requirements file all change the stamp)."""
    import hashlib

    text = "\0".join([hashlib.sha256(script).hexdigest(), *argv, stack, requirements_sha])
    return hashlib.sha256(text.encode()).hexdigest()


def packaged_script() -> bytes:
    return resources.files("awsrun").joinpath("data", "bootstrap.sh").read_bytes()


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
