"""A new instance's SSH host key, checked before the first contact pins it: cloud-init prints the host key
fingerprints on the boot console, which EC2 serves a while after boot (awsrun.remote.hostkeys reads them).

The console is read again every CONSOLE_POLL_S until they are there, for a bounded time; without them the
key is trusted on first use, which the user hears in one warning and the instance's record keeps.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from awsrun.progress import Reporter
from awsrun.remote.hostkeys import KnownHosts, fingerprints_from_console
from awsrun.state import InstanceRecord, State

HOST_KEY_WAIT_S = 90.0   # cloud-init prints them in its final stage, usually within a minute of SSH answering
CONSOLE_POLL_S = 3.0
TRUSTED_ON_FIRST_USE = "trusted on first use"


def await_boot_fingerprints(state: State, known_hosts: Path, reporter: Reporter, record: InstanceRecord, provider,
                            wait_s: float, sleep: Callable[[float], None] = time.sleep) -> InstanceRecord:
    """The record with the console's fingerprints (`host_key_fingerprints`), or marked `host_key` =
    TRUSTED_ON_FIRST_USE after `wait_s` without them. Nothing to do once the key is pinned."""
    if KnownHosts(known_hosts).lookup(record.id):
        return record
    deadline = time.monotonic() + wait_s
    while True:
        prints = fingerprints_from_console(provider.console_output(record.id))
        if prints:
            record = dataclasses.replace(record, extra={**record.extra, "host_key_fingerprints": sorted(prints)})
            break
        left = deadline - time.monotonic()
        if left <= 0:
            reporter.warn(f"{record.id} printed no SSH host key fingerprints on its console within {wait_s:.0f}s: "
                          f"its host key is {TRUSTED_ON_FIRST_USE}, unchecked")
            record = dataclasses.replace(record, extra={**record.extra, "host_key": TRUSTED_ON_FIRST_USE})
            break
        sleep(min(CONSOLE_POLL_S, left))
    state.put_instance(record)
    return record
