"""`awsrun up` on a node that is ready: the bootstrap's ready stamp (awsrun.setup.bootstrap_plan.ready_digest) lets up
skip the checks (two `import torch`, seconds) after ONE probe, and only when nothing could have changed:
same boot, same script, same arguments, same requirements. `awsrun bootstrap` always checks. Against a
scripted node (the real script's protocol lines), as tests/test_bootstrap_client.py does."""
from __future__ import annotations

import re
import shlex
from dataclasses import replace

from awsrun.remote.base import Result
from awsrun.settings import Settings
from awsrun.setup.bootstrap import bootstrap_node

PROBE = """home=/home/ubuntu
user=ubuntu
boot_id={boot}
{requirements}ready={ready}
[gpu]
[lspci]
[os-release]
ID=ubuntu
VERSION_ID="22.04"
"""
OK_LINES = ["==> packages skip all present", "==> driver skip no NVIDIA GPU", "==> venv skip works",
            "==> torch skip ok", "==> requirements skip no --requirements given", "==> verify start",
            "AWSRUN_VERIFY torch=2.13.0+cpu cuda=False devices=0 name=cpu", "==> verify done 2s"]


class Node:
    """One machine: its boot id, the stamp file, and every command it was sent."""

    name = "i-0abc"

    def __init__(self):
        self.boot, self.stamp, self.requirements = "b-1", "", ""
        self.commands: list[str] = []

    def run(self, command, *, stdin=None, on_line=None, timeout=None) -> Result:
        text = command if isinstance(command, str) else shlex.join(command)
        self.commands.append(text)
        if text.startswith("mkdir -p"):
            extra = f"requirements=yes\nrequirements_sha={self.requirements}\n" if self.requirements else ""
            return Result(text, 0, PROBE.format(boot=self.boot, ready=self.stamp, requirements=extra), "")
        if text.startswith("bash "):
            for line in OK_LINES:
                on_line(line)
            return Result(text, 0, "\n".join(OK_LINES) + "\n", "")
        written = re.search(r'%s ([0-9a-f]{64})\\n".*boot_id.*/ready"$', text)
        if written:
            self.stamp = f"{self.boot} {written.group(1)}"
        return Result(text, 0, "", "")

    def put_bytes(self, data, remote_path, mode=0o644):
        self.commands.append(f"put {remote_path}")

    def get_bytes(self, remote_path):
        return b""

    def close(self):
        pass

    def ran_script(self) -> bool:
        return any(c.startswith("bash ") for c in self.commands)


def bootstrap(node: Node, tmp_path, settings: Settings = Settings(), trust_ready: bool = True):
    node.commands.clear()
    return bootstrap_node(node, settings, instance_type=None, log_path=tmp_path / "b.log", on_line=lambda line: None,
                          reconnect=lambda: node, trust_ready=trust_ready)


def test_a_ready_node_is_one_probe(tmp_path):
    node = Node()
    assert bootstrap(node, tmp_path).outcome("verify") == "done" and node.ran_script()
    assert node.stamp.startswith("b-1 ")
    report = bootstrap(node, tmp_path)
    assert node.commands == [node.commands[0]] and node.commands[0].startswith("mkdir -p")  # the probe only
    assert {s.outcome for s in report.steps} == {"skip"} and report.verify is None


def test_anything_that_could_have_changed_runs_the_checks(tmp_path):
    node = Node()
    bootstrap(node, tmp_path)
    bootstrap(node, tmp_path, trust_ready=False)                       # `awsrun bootstrap`: always checks
    assert node.ran_script()
    node.boot = "b-2"                                                 # a reboot (driver, kernel, spot restart)
    bootstrap(node, tmp_path)
    assert node.ran_script()
    bootstrap(node, tmp_path, replace(Settings(), venv="~/venvs/other"))  # other arguments
    assert node.ran_script()
    bootstrap(node, tmp_path, replace(Settings(), venv="~/venvs/other"))
    assert not node.ran_script()
    node.requirements = "a" * 64                                      # a requirements file appeared / changed
    bootstrap(node, tmp_path, replace(Settings(), venv="~/venvs/other"))
    assert node.ran_script()
