"""Which files of a project travel: gitignore-style rules (.gitignore, .awsrunignore, awsrun's defaults)
as regular expressions over '/'-separated paths. The same compiled tiers run here and, shipped as their
regex text, in the walker on the target (awsrun.transfer.walker), so both sides list the same files."""
from __future__ import annotations

import re

# What never travels unless .awsrunignore re-includes it (`!/data/`): VCS internals, caches, virtualenvs
# and dependencies the instance builds itself, and the two big directories of an ML project: `runs/`
# (results: they come back with `awsrun pull`, and are never deleted on the instance by a sync) and
# `data/` (datasets: download them on the instance). Checkpoints elsewhere (*.pt) do travel: a
# pretrained weight file is often part of the code.
DEFAULT_IGNORE = """\
.git/
.hg/
.svn/
__pycache__/
*.py[cod]
.venv/
venv/
node_modules/
.ipynb_checkpoints/
.mypy_cache/
.pytest_cache/
.ruff_cache/
.tox/
*.egg-info/
.DS_Store
/runs/
/data/
"""

def glob_regex(pattern: str) -> str:
    """A gitignore glob as a regular expression over '/'-separated paths."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i) and (i == 0 or pattern[i - 1] == "/"):
                if i + 2 == n:
                    out.append(".*")
                    i += 2
                    continue
                if pattern[i + 2] == "/":
                    out.append("(?:[^/]*/)*")
                    i += 3
                    continue
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                body = "".join("\\" + ch if ch in "\\[]&~|^" else ch for ch in body)
                out.append("[^/" + body + "]" if negate else "[" + body + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse_ignore(text: str, base: str = "") -> list[list]:
    """Rules of one ignore file in directory `base`: [base, regex, negate, dir_only, basename_only]."""
    return [[b, glob_regex(glob), negate, dir_only, basename_only]
            for b, glob, negate, dir_only, basename_only in parse_patterns(text, base)]


def parse_patterns(text: str, base: str = "") -> list[list]:
    """Rules of one ignore file as globs: [base, glob, negate, dir_only, basename_only] (awsrun.transfer.rsync
    hands them to rsync, whose wildcards are gitignore's)."""
    rules = []
    for line in text.splitlines():
        while line.endswith(" ") and not line.endswith("\\ "):
            line = line[:-1]
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        rules.append([base, line.lstrip("/"), negate, dir_only, not anchored])
    return rules


def compile_tiers(tiers: list[list[list]]) -> list[list[tuple]]:
    return [[(b, re.compile(rx, re.DOTALL), neg, d, bn) for b, rx, neg, d, bn in tier] for tier in tiers]
