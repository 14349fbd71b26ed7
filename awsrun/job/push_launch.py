"""A submit's files and its launch in one SSH session (awsrun.job.submission.submit, where rsync is on both sides).

When the project is what awsrun last pushed to that directory (awsrun.transfer.pushcache), one command asks the
target to confirm it still holds exactly that, and launches: no rsync at all. Otherwise, or when the
target answers CHANGED, rsync sends the difference and the launch runs inside rsync's own session
(transfer.push_then). Either way a running job of that name refuses before a file is written.
"""
from __future__ import annotations

import shutil

from awsrun.remote.base import Remote, Result
from awsrun.transfer import pushcache
from awsrun.transfer import rsync as transfer
from awsrun.transfer.scan import LocalTree, SyncReport


def push_and_launch(remote: Remote, tree: LocalTree, remote_root: str, *, busy: str, launch: str, python: str,
                    cache: pushcache.ManifestCache,
                    on_progress: transfer.Progress | None = None) -> tuple[SyncReport, Result]:
    """-> (what moved, the launch step's result). The launch step makes the project's absolute-target
    links first (transfer.link_steps). The caller saves the manifest in `cache` once the job started.
    Raises transfer.JobBusy (only from the push: the check exits tmux.EXIT_RUNNING instead) and
    transfer.RsyncMissing (before anything runs when rsync is missing here)."""
    if shutil.which(transfer.RSYNC) is None:
        raise transfer.RsyncMissing("rsync is not installed here")
    links = transfer.link_steps(tree, remote_root)
    step = f"{links} && {{ {launch}; }}" if links else launch
    expected = cache.matches(tree.entries)
    if expected is not None:
        result = remote.run(pushcache.unchanged_then(remote_root, python, expected, busy, step),
                            stdin=pushcache.tiers_input(tree))
        if result.exit_code != pushcache.CHANGED:
            return SyncReport(0, 0, 0, 0, len(tree.entries), remote_root, tuple(tree.warnings)), result
    cache.forget()  # what the target holds is rsync's doing from here: never trust the old manifest
    report, result = transfer.push_then(remote, tree, remote_root, busy=busy, then=step, on_progress=on_progress)
    assert result is not None  # push_then runs `then` whenever it returns
    return report, result
