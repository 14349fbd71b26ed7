"""Which NVIDIA driver and which PyTorch build to install, as a pure function.

Facts behind the rules (checked 2026; refresh when PyTorch or NVIDIA move on):

* PyTorch 2.12/2.13 ship CUDA 12.6 (legacy), 13.0 (stable, the PyPI default) and
  13.2 (experimental) builds; CUDA 12.8 builds were dropped in 2.12.
  pytorch/pytorch RELEASE.md, PRs #182849 and #187075, RFC #178665.
* The CUDA 12.8+/13.x builds cover Turing (sm_75) and newer only; Volta (sm_70)
  went from cu128 in 2.11 (RFC #172352) and CUDA 13 has no Volta at all. The
  cu126 build keeps sm_50, sm_60 and sm_70.
* CUDA 13 needs driver >= 580.65.06. R580 is a long-term branch (EOL June 2028)
  and the last one for Maxwell, Pascal and Volta (NVIDIA data center driver docs,
  "Supported Drivers and CUDA Toolkit Versions").
* The open kernel modules need the GSP that arrived with Turing, so V100 and K80
  need the proprietary modules; NVIDIA recommends the open ones for Turing and
  newer since R560 (NVIDIA/open-gpu-kernel-modules#19, NVIDIA's "Unix graphics
  feature deprecation schedule").
* Kepler (K80, sm_37): 470 is the last driver branch (CUDA 11.4). PyTorch 1.12.1
  is the newest release with a build for a CUDA that 470 runs natively (cu113;
  pytorch/builder manywheel/build_cuda.sh lists 3.7 in its arch list). Later
  cu116-cu118 builds still carry sm_37 but rely on CUDA minor-version
  compatibility on 470; current builds have none. 1.12.1 wheels go up to
  Python 3.10 only.
* Ubuntu ships nvidia-headless-{470,580}-server[-open] in restricted for 22.04
  and 24.04 (packages.ubuntu.com); headless skips the X11 stack a training
  box does not need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TORCH_VERSION = "2.13.0"
TORCH_INDEX = "https://download.pytorch.org/whl/"
CURRENT_DRIVER_BRANCH = "580-server"
LEGACY_DRIVER_BRANCH = "470-server"
LEGACY_TORCH_SPEC = "torch==1.12.1+cu113"

# torch 2.13 supports Python 3.10-3.15; torch 1.12.1 has wheels for 3.7-3.10.
_CURRENT_PYTHON = ((3, 10), (3, 15))
_LEGACY_PYTHON = ((3, 7), (3, 10))

# Known GPU models -> compute capability (NVIDIA's CUDA GPUs table).
KNOWN_GPUS: dict[str, str] = {
    "K80": "3.7",
    "M60": "5.2",
    "V100": "7.0",
    "T4": "7.5",
    "T4G": "7.5",
    "A10G": "8.6",
    "A10": "8.6",
    "A100": "8.0",
    "L4": "8.9",
    "L40S": "8.9",
    "H100": "9.0",
    "H200": "9.0",
    "B200": "10.0",
}

# The python3 each distribution release ships (what /usr/bin/python3 will be).
SYSTEM_PYTHON: dict[tuple[str, str], tuple[int, int]] = {
    ("ubuntu", "20.04"): (3, 8),
    ("ubuntu", "22.04"): (3, 10),
    ("ubuntu", "24.04"): (3, 12),
    ("debian", "11"): (3, 9),
    ("debian", "12"): (3, 11),
    ("debian", "13"): (3, 13),
}


@dataclass(frozen=True)
class Stack:
    """What to install on a host; ``supported`` False means refuse, see ``reason``."""

    label: str
    supported: bool
    reason: str
    driver_branch: str | None
    driver_packages: tuple[str, ...]
    torch_spec: str
    torch_index_url: str
    python_requirement: str
    note: str = ""


def parse_os_release(text: str) -> tuple[str, str]:
    """(ID, VERSION_ID) from the contents of /etc/os-release; "" when absent."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            values[key] = value.strip().strip("'\"")
    return values.get("ID", "").lower(), values.get("VERSION_ID", "")


def _os_of(os_release: str) -> tuple[str, str]:
    """Accept os-release text, "ubuntu 22.04" / "ubuntu:22.04", or a bare "22.04"."""
    if "=" in os_release:
        return parse_os_release(os_release)
    parts = os_release.replace(":", " ").split()
    if len(parts) == 1:
        return "ubuntu", parts[0]
    if len(parts) >= 2:
        return parts[0].lower(), parts[1]
    return "", ""


def normalize_gpu_model(gpu_model: str) -> str:
    """"Tesla V100-SXM2-16GB" -> "V100", "NVIDIA L40S" -> "L40S"; unknown names as given."""
    tokens = re.split(r"[\s_\-/]+", gpu_model.upper())
    for token in tokens:
        if token in KNOWN_GPUS:
            return token
    return gpu_model.strip()


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = cc.strip().partition(".")
    return int(major), int(minor or 0)


def _torch_words(spec: str, index_tag: str) -> str:
    version = spec[len("torch==") :] if spec.startswith("torch==") else spec
    return version if "+" in version else f"{version} ({index_tag} index)"


def _python_refusal(
    os_id: str, os_version: str, bounds: tuple[tuple[int, int], tuple[int, int]], what: str
) -> str:
    """A refusal reason when the distribution's python3 is outside ``bounds``, else ""."""
    have = SYSTEM_PYTHON.get((os_id, os_version))
    (lo, hi) = bounds
    if have is None or lo <= have <= hi:
        return ""
    fits = [f"Ubuntu {v}" for (i, v), py in SYSTEM_PYTHON.items() if i == "ubuntu" and lo <= py <= hi]
    return (
        f"{what} has wheels for Python {lo[0]}.{lo[1]}-{hi[0]}.{hi[1]} only, but "
        f"{os_id.capitalize()} {os_version} ships Python {have[0]}.{have[1]}; "
        f"use an image based on {' or '.join(fits) or 'an older release'}"
    )


def _current_python_refusal(os_id: str, os_version: str) -> str:
    return _python_refusal(os_id, os_version, _CURRENT_PYTHON, f"torch {DEFAULT_TORCH_VERSION}")


def _py_req(bounds: tuple[tuple[int, int], tuple[int, int]]) -> str:
    (lo, hi) = bounds
    return f">={lo[0]}.{lo[1]},<{hi[0]}.{hi[1] + 1}"


def choose_stack(
    gpu_model: str | None,
    compute_capability: str | None,
    os_release: str,
    torch_spec: str | None = None,
) -> Stack:
    """Driver and PyTorch build for a GPU (or none) on a given OS.

    ``torch_spec`` overrides the default torch requirement of the current stacks
    (CPU, Maxwell-Volta, Turing and newer); the K80 legacy stack ignores it because
    nothing else runs there.
    """
    os_id, os_version = _os_of(os_release)
    note = "" if os_id in ("ubuntu", "") else f"driver package names are Ubuntu's; {os_id} may differ"
    model = normalize_gpu_model(gpu_model) if gpu_model else None
    cc = compute_capability or (KNOWN_GPUS.get(model) if model else None)

    if model is None and cc is None:
        spec = torch_spec or f"torch=={DEFAULT_TORCH_VERSION}+cpu"
        refusal = "" if torch_spec else _current_python_refusal(os_id, os_version)
        return Stack(
            label="no GPU: CPU build",
            supported=not refusal,
            reason=refusal,
            driver_branch=None,
            driver_packages=(),
            torch_spec=spec,
            torch_index_url=TORCH_INDEX + "cpu",
            python_requirement="" if torch_spec else _py_req(_CURRENT_PYTHON),
            note="",  # no driver to install: the package names do not matter
        )

    name = model or "GPU"
    if cc is None:
        return _refused(f"{name}: unknown compute capability",
                        f"unknown GPU model {gpu_model!r}: pass its compute capability", note)

    major, minor = _cc_tuple(cc)
    sm = f"sm_{major}{minor}"

    if (major, minor) == (3, 7):
        refusal = _python_refusal(
            os_id, os_version, _LEGACY_PYTHON, "torch 1.12.1 (the last PyTorch for K80 on driver 470)"
        )
        return Stack(
            label=(
                f"{name} ({sm}): legacy stack driver 470 + torch 1.12.1+cu113 "
                f"(current PyTorch CUDA builds no longer support {sm})"
            ),
            supported=not refusal,
            reason=refusal,
            driver_branch=LEGACY_DRIVER_BRANCH,
            driver_packages=("nvidia-headless-470-server", "nvidia-utils-470-server"),
            torch_spec=LEGACY_TORCH_SPEC,
            torch_index_url=TORCH_INDEX + "cu113",
            python_requirement=_py_req(_LEGACY_PYTHON),
            note=note,
        )

    if major < 5:
        return _refused(f"{name} ({sm}): unsupported",
                        f"{sm} is too old: no PyTorch binaries and no maintained NVIDIA driver support it", note)

    if (major, minor) < (7, 5):
        # Maxwell/Pascal/Volta: proprietary modules (no GSP), cu126 is their last build.
        tag, flavour, packages = "cu126", "", ("nvidia-headless-580-server", "nvidia-utils-580-server")
        why = f" (PyTorch's CUDA 12.8+ and 13.x builds dropped {sm})"
    else:
        tag, flavour, packages = (
            "cu130",
            " (open kernel modules)",
            ("nvidia-headless-580-server-open", "nvidia-utils-580-server"),
        )
        why = ""
    spec = torch_spec or f"torch=={DEFAULT_TORCH_VERSION}+{tag}"
    refusal = "" if torch_spec else _current_python_refusal(os_id, os_version)
    return Stack(
        label=f"{name} ({sm}): driver 580{flavour} + torch {_torch_words(spec, tag)}{why}",
        supported=not refusal,
        reason=refusal,
        driver_branch=CURRENT_DRIVER_BRANCH,
        driver_packages=packages,
        torch_spec=spec,
        torch_index_url=TORCH_INDEX + tag,
        python_requirement="" if torch_spec else _py_req(_CURRENT_PYTHON),
        note=note,
    )


def _refused(label: str, reason: str, note: str) -> Stack:
    """A GPU awsrun cannot give a working PyTorch: nothing to install, and the reason why."""
    return Stack(label=label, supported=False, reason=reason, driver_branch=None, driver_packages=(),
                 torch_spec="", torch_index_url="", python_requirement="", note=note)
