"""Runs on the target after walker.py's text (awsrun.transfer.pushcache): reads the rule tiers (one JSON line on
stdin) and walks the directory argv[1]. When the SHA-256 of its canonical manifest (mtimes in whole
seconds, as pushcache.digest) is argv[2], it returns and the launch follows; otherwise it exits 75
(pushcache.CHANGED). Standard library only; nothing runs on import.
"""
import json
import os
import re
import sys


def check_manifest():
    try:  # the interpreter's own SHA-256 (hashlib loads OpenSSL first: 3 ms of a 20 ms start)
        from _sha256 import sha256
    except ImportError:
        try:
            from _sha2 import sha256  # its name from Python 3.12
        except ImportError:
            from hashlib import sha256
    root, expected = os.path.expanduser(sys.argv[1]), sys.argv[2]
    tiers = [[(b, re.compile(rx, re.DOTALL), n, d, bn) for b, rx, n, d, bn in tier]
             for tier in json.loads(sys.stdin.buffer.readline())]
    have = walk_tree(root, tiers, stale_after=600) if os.path.isdir(root) else {}  # noqa: F821 (walker.py's)
    canonical = {path: [e[0], e[1], e[2] // 1000000000, e[3]] if e[0] == "f" else e for path, e in have.items()}
    if sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest() != expected:
        sys.exit(75)


if __name__ == "__main__":
    check_manifest()
