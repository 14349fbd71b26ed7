"""Runs on the target after walker.py's text (awsrun.transfer.scan.manifest_command): prints the JSON manifest of
the directory argv[1], walked with the rule tiers read as JSON on stdin ({} when there is no such
directory). Standard library only; nothing runs on import.
"""
import json
import os
import re
import sys


def print_manifest():
    root = os.path.expanduser(sys.argv[1])
    tiers = [[(b, re.compile(rx, re.DOTALL), n, d, bn) for b, rx, n, d, bn in tier] for tier in json.load(sys.stdin)]
    have = walk_tree(root, tiers, stale_after=600) if os.path.isdir(root) else {}  # noqa: F821 (walker.py's)
    print(json.dumps(have))


if __name__ == "__main__":
    print_manifest()
