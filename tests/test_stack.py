from __future__ import annotations

import pytest

from awsrun.setup.stack import (
    Stack,
    choose_stack,
    normalize_gpu_model,
    parse_os_release,
)

JAMMY = """PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
ID=ubuntu
ID_LIKE=debian
"""
NOBLE = JAMMY.replace('VERSION_ID="22.04"', 'VERSION_ID="24.04"')
FOCAL = JAMMY.replace('VERSION_ID="22.04"', 'VERSION_ID="20.04"')

IDX = "https://download.pytorch.org/whl/"
OPEN = ("nvidia-headless-580-server-open", "nvidia-utils-580-server")
CURRENT_PY = ">=3.10,<3.16"


def _current(model: str, sm: str) -> Stack:
    return Stack(
        label=f"{model} ({sm}): driver 580 (open kernel modules) + torch 2.13.0+cu130",
        supported=True,
        reason="",
        driver_branch="580-server",
        driver_packages=OPEN,
        torch_spec="torch==2.13.0+cu130",
        torch_index_url=IDX + "cu130",
        python_requirement=CURRENT_PY,
    )


TABLE = {
    "K80": Stack(
        label=(
            "K80 (sm_37): legacy stack driver 470 + torch 1.12.1+cu113 "
            "(current PyTorch CUDA builds no longer support sm_37)"
        ),
        supported=True,
        reason="",
        driver_branch="470-server",
        driver_packages=("nvidia-headless-470-server", "nvidia-utils-470-server"),
        torch_spec="torch==1.12.1+cu113",
        torch_index_url=IDX + "cu113",
        python_requirement=">=3.7,<3.11",
    ),
    "V100": Stack(
        label="V100 (sm_70): driver 580 + torch 2.13.0+cu126 (PyTorch's CUDA 12.8+ and 13.x builds dropped sm_70)",
        supported=True,
        reason="",
        driver_branch="580-server",
        driver_packages=("nvidia-headless-580-server", "nvidia-utils-580-server"),
        torch_spec="torch==2.13.0+cu126",
        torch_index_url=IDX + "cu126",
        python_requirement=CURRENT_PY,
    ),
    "T4": _current("T4", "sm_75"),
    "A10G": _current("A10G", "sm_86"),
    "L4": _current("L4", "sm_89"),
    "L40S": _current("L40S", "sm_89"),
    "A100": _current("A100", "sm_80"),
    "H100": _current("H100", "sm_90"),
    None: Stack(
        label="no GPU: CPU build",
        supported=True,
        reason="",
        driver_branch=None,
        driver_packages=(),
        torch_spec="torch==2.13.0+cpu",
        torch_index_url=IDX + "cpu",
        python_requirement=CURRENT_PY,
    ),
}


@pytest.mark.parametrize("model", list(TABLE), ids=lambda m: m or "no-gpu")
def test_stack_on_ubuntu_2204(model):
    assert choose_stack(model, None, JAMMY) == TABLE[model]


def test_explicit_compute_capability_decides_for_unknown_models():
    assert choose_stack("RTX 6000 Ada", "8.9", JAMMY).torch_spec == "torch==2.13.0+cu130"
    assert choose_stack(None, "7.0", JAMMY).torch_index_url == IDX + "cu126"
    pascal = choose_stack(None, "6.0", JAMMY)
    assert pascal.driver_packages == ("nvidia-headless-580-server", "nvidia-utils-580-server")


def test_k80_on_2404_is_refused_with_the_python_reason():
    stack = choose_stack("K80", "3.7", NOBLE)
    assert not stack.supported
    assert stack.reason == (
        "torch 1.12.1 (the last PyTorch for K80 on driver 470) has wheels for Python 3.7-3.10 only, "
        "but Ubuntu 24.04 ships Python 3.12; use an image based on Ubuntu 20.04 or Ubuntu 22.04"
    )


def test_k80_works_on_2004():
    assert choose_stack("K80", None, FOCAL).supported


def test_current_stack_refused_on_2004_python_38():
    stack = choose_stack("T4", None, FOCAL)
    assert not stack.supported and "Python 3.8" in stack.reason


def test_current_stacks_work_on_2404():
    assert choose_stack("H100", None, NOBLE).supported
    assert choose_stack(None, None, NOBLE).supported


def test_torch_spec_override_applies_to_current_stacks_only():
    t4 = choose_stack("T4", None, "ubuntu 24.04", torch_spec="torch==2.12.0")
    assert t4.torch_spec == "torch==2.12.0" and t4.torch_index_url == IDX + "cu130"
    assert t4.label == "T4 (sm_75): driver 580 (open kernel modules) + torch 2.12.0 (cu130 index)"
    assert choose_stack(None, None, "22.04", torch_spec="torch==2.12.0+cpu").torch_spec == "torch==2.12.0+cpu"
    assert choose_stack("K80", None, "22.04", torch_spec="torch==2.12.0").torch_spec == "torch==1.12.1+cu113"


def test_unknown_gpu_without_capability_and_too_old_gpus_are_refused():
    assert not choose_stack("Mystery9000", None, JAMMY).supported
    old = choose_stack("K40", "3.5", JAMMY)
    assert not old.supported and "sm_35" in old.reason


def test_gpu_names_as_reported_by_drivers():
    assert normalize_gpu_model("Tesla V100-SXM2-16GB") == "V100"
    assert normalize_gpu_model("NVIDIA A10G") == "A10G"
    assert normalize_gpu_model("NVIDIA H100 80GB HBM3") == "H100"
    assert choose_stack("Tesla T4", None, JAMMY) == TABLE["T4"]


def test_parse_os_release():
    assert parse_os_release(JAMMY) == ("ubuntu", "22.04")
    assert parse_os_release("ID='debian'\nVERSION_ID=12\n") == ("debian", "12")
    assert parse_os_release("") == ("", "")


def test_non_ubuntu_hosts_get_a_note_about_package_names():
    stack = choose_stack("T4", None, "ID=debian\nVERSION_ID=12\n")
    assert stack.supported and "Ubuntu" in stack.note
    assert choose_stack(None, None, "ID=debian\nVERSION_ID=12\n").note == ""  # no driver, no note
