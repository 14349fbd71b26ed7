"""What the bootstrap of a node will run, decided before anything runs: one probe round trip (home, user,
boot id, /etc/os-release, GPU, the ready stamp), the driver/PyTorch stack that follows from the instance
type or what the probe saw, the packaged script's argv, and the ready stamp (ready_digest) that lets `up`
skip a node whose bootstrap has nothing left to do. The run itself: awsrun.setup.bootstrap.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

from awsrun.errors import RemoteError
from awsrun.settings import Settings
from awsrun.setup import catalog
from awsrun.setup.stack import Stack, choose_stack

STATE_DIR = ".awsrun/bootstrap"            # under the login user's home; the script's default


READY_FILE = f"{STATE_DIR}/ready"          # "BOOT_ID DIGEST" of the last bootstrap that finished


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
