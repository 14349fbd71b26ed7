"""Job verbs: submit, attach, logs, pull, kill, ssh, jobs, tunnel."""
from __future__ import annotations

from awsrun.cli.cluster import _pending

COMMANDS = [_pending(v) for v in ("submit", "attach", "logs", "pull", "ssh")]
