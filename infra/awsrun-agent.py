#!/usr/bin/env python3
"""awsrun's agent on the instance: idle auto-stop and spot-interruption handling, with no daemon on the
user's laptop and no AWS credentials on the instance. Python 3 standard library only.

    awsrun-agent.py tick        # once a minute (systemd timer): autostop check + interruption check
    awsrun-agent.py boot        # once at boot (systemd oneshot): restart jobs an interruption stopped
    awsrun-agent.py status      # JSON: autostop setting, idle since, when it fires, interruptions seen

Config: ~/.awsrun/agent/config.json, e.g.
    {"idle_seconds": 1800, "count_ssh_users": false, "shutdown_command": ["sudo", "shutdown", "-h", "now"],
     "imds_url": "http://169.254.169.254", "gpu_idle_percent": 5}
With gpu_idle_percent, a running job keeps the instance up only while some GPU is busier than that (read
from nvidia-smi at every tick): a hung loop or a forgotten notebook counts as idle. No reading (no
nvidia-smi, an error) counts as busy: the agent never stops an instance on a guess.
The stop itself is `shutdown`: the instance was launched with InstanceInitiatedShutdownBehavior=stop
(or terminate, for --autostop-down), so the OS halting is what stops (or ends) the billing.
Jobs live in ~/.awsrun/jobs/NAME/ (see awsrun/job/tmux.py): a job is running while its tmux session exists
and it has no exit_code file; `pid` is the job's process, `launch` the shell line that started it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOME = Path.home()
AGENT_DIR = HOME / ".awsrun" / "agent"
JOBS_DIR = HOME / ".awsrun" / "jobs"
DEFAULTS = {
    "idle_seconds": None,
    "count_ssh_users": False,
    "shutdown_command": ["sudo", "shutdown", "-h", "now"],
    "imds_url": "http://169.254.169.254",
    "gpu_idle_percent": None,
}


def load_config() -> dict:
    path = AGENT_DIR / "config.json"
    config = dict(DEFAULTS)
    if path.exists():
        config.update(json.loads(path.read_text()))
    return config


def load_state() -> dict:
    path = AGENT_DIR / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(state: dict) -> None:
    AGENT_DIR.mkdir(parents=True, exist_ok=True)
    temp = AGENT_DIR / "state.json.tmp"
    temp.write_text(json.dumps(state))
    os.replace(temp, AGENT_DIR / "state.json")


def log(message: str) -> None:
    AGENT_DIR.mkdir(parents=True, exist_ok=True)
    with open(AGENT_DIR / "agent.log", "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")


def live_sessions() -> set[str]:
    result = subprocess.run(["tmux", "-L", "awsrun", "list-sessions", "-F", "#{session_name}"],
                            capture_output=True, text=True)
    return set(result.stdout.split()) if result.returncode == 0 else set()


def running_jobs() -> list[Path]:
    if not JOBS_DIR.is_dir():
        return []
    sessions = live_sessions()
    return [d for d in sorted(JOBS_DIR.iterdir())
            if d.is_dir() and d.name in sessions and not (d / "exit_code").exists()]


def ssh_users() -> int:
    result = subprocess.run(["who"], capture_output=True, text=True)
    return len([line for line in result.stdout.splitlines() if line.strip()])


def gpu_utilisation() -> list[float] | None:
    """Each GPU's utilisation now, in percent (nvidia-smi); None when it cannot be read."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=30)
        values = [float(line.strip()) for line in result.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return values if result.returncode == 0 and values else None


def check_idle(config: dict, state: dict, now: float) -> None:
    idle_seconds = config.get("idle_seconds")
    if not idle_seconds or state.get("fired_at"):
        return
    # a job dir with a `service` file (awsrun tensorboard / notebook) is a server, not work: it keeps no one busy
    jobs = [job for job in running_jobs() if not (job / "service").exists()]
    threshold = config.get("gpu_idle_percent")
    state.pop("gpu_utilisation", None)
    if jobs and threshold is not None:
        usage = gpu_utilisation()
        state["gpu_utilisation"] = usage
        if usage is not None and max(usage) < float(threshold):
            jobs = []  # their GPUs sit below the threshold: as idle as no job at all
    busy = bool(jobs) or (config.get("count_ssh_users") and ssh_users() > 0)
    if busy:
        state.pop("idle_since", None)
        return
    state.setdefault("idle_since", now)
    if now - state["idle_since"] >= idle_seconds:
        state["fired_at"] = now
        save_state(state)
        log(f"idle for {now - state['idle_since']:.0f}s >= {idle_seconds}s: running {config['shutdown_command']}")
        subprocess.run(config["shutdown_command"], check=False)


def interruption_notice(imds_url: str) -> dict | None:
    """The spot instance-action notice through IMDSv2, or None (404 = no notice)."""
    try:
        token_request = urllib.request.Request(
            f"{imds_url}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        token = urllib.request.urlopen(token_request, timeout=2).read().decode()
        action_request = urllib.request.Request(
            f"{imds_url}/latest/meta-data/spot/instance-action",
            headers={"X-aws-ec2-metadata-token": token})
        return json.loads(urllib.request.urlopen(action_request, timeout=2).read().decode())
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            log(f"metadata answered {exc.code}")
        return None
    except (OSError, ValueError):
        return None


def handle_interruption(config: dict, state: dict) -> None:
    notice = interruption_notice(config["imds_url"])
    if notice is None or state.get("interrupted_at"):
        return
    state["interrupted_at"] = time.time()
    state["notice"] = notice
    for job in running_jobs():
        (job / "interrupted").write_text(json.dumps(notice))
        pid_file = job / "pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
                log(f"interruption notice {notice}: SIGTERM to job {job.name}")
            except (ProcessLookupError, ValueError):
                pass


def boot() -> int:
    """Restart every job an interruption stopped, with the same command line, in its tmux session."""
    state = load_state()
    state.pop("interrupted_at", None)
    state.pop("notice", None)
    state.pop("fired_at", None)
    state.pop("idle_since", None)
    save_state(state)
    if not JOBS_DIR.is_dir():
        return 0
    for job in sorted(JOBS_DIR.iterdir()):
        marker, launch = job / "interrupted", job / "launch"
        if not marker.exists() or not launch.exists():
            continue
        restarts = int((job / "restarts").read_text()) + 1 if (job / "restarts").exists() else 1
        marker.unlink()
        for stale in ("exit_code", "ended_at", "pid"):
            (job / stale).unlink(missing_ok=True)
        (job / "restarts").write_text(str(restarts))
        result = subprocess.run(["bash", "-c", launch.read_text()], capture_output=True, text=True)
        log(f"boot: restarted {job.name} (restart {restarts}): exit {result.returncode} {result.stderr.strip()}")
    return 0


def tick() -> int:
    config, state, now = load_config(), load_state(), time.time()
    handle_interruption(config, state)
    check_idle(config, state, now)
    state["last_tick"] = now
    save_state(state)
    return 0


def status() -> int:
    config, state = load_config(), load_state()
    idle_since, idle_seconds = state.get("idle_since"), config.get("idle_seconds")
    fires_at = idle_since + idle_seconds if (idle_since and idle_seconds) else None
    print(json.dumps({
        "idle_seconds": idle_seconds, "idle_since": idle_since, "fires_at": fires_at,
        "fired_at": state.get("fired_at"), "running_jobs": [j.name for j in running_jobs()],
        "gpu_idle_percent": config.get("gpu_idle_percent"), "gpu_utilisation": state.get("gpu_utilisation"),
        "interrupted_at": state.get("interrupted_at"), "last_tick": state.get("last_tick"),
    }))
    return 0


def main(argv: list[str]) -> int:
    commands = {"tick": tick, "boot": boot, "status": status}
    if len(argv) != 2 or argv[1] not in commands:
        print(f"usage: {argv[0]} {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    return commands[argv[1]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
