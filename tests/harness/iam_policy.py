"""A small evaluator of IAM policy JSON, for testing infra/iam-policy.json and its permissions boundary.

moto ships one (moto.iam.access_control.IAMPolicy), but it cannot express these policies: its conditions
know StringEquals only (no Null, StringLike, ArnLike, IfExists, ForAllValues), an unmet condition on an Allow
statement there denies outright instead of not applying, and it substitutes no policy variables. This one
follows the IAM user guide's evaluation logic for identity policies and boundaries, no more: an explicit
Deny wins, otherwise some Allow must apply, in the identity policy AND in the boundary when there is one
("Policy evaluation logic" and "Permissions boundaries for IAM entities"). Wildcards '*' and '?'; actions
compare case-insensitively; a condition key missing from the request fails a condition unless it is
IfExists, ForAllValues, negated, or Null.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Context = dict[str, Any]   # condition key -> value (str) or values (list of str)


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Context = field(default_factory=dict)


def allowed(request: Request, identity: dict, boundary: dict | None = None) -> bool:
    if decide(identity, request) != "Allow":
        return False
    return boundary is None or decide(boundary, request) == "Allow"


def decide(policy: dict, request: Request) -> str | None:
    """'Deny' (explicit), 'Allow', or None (implicitly denied)."""
    statements = policy["Statement"]
    decisions = [s["Effect"] for s in (statements if isinstance(statements, list) else [statements])
                 if _applies(s, request)]
    return "Deny" if "Deny" in decisions else "Allow" if "Allow" in decisions else None


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _wild(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _substitute(text: str, context: Context) -> str:
    def value(match: re.Match) -> str:
        found = context.get(match.group(1))
        if not isinstance(found, str):
            raise KeyError(f"policy variable ${{{match.group(1)}}} has no value in the request")
        return found
    return re.sub(r"\$\{([^}]+)\}", value, text)


def _applies(statement: dict, request: Request) -> bool:
    if "Action" in statement:
        if not any(_wild(a, request.action, ignore_case=True) for a in _listed(statement["Action"])):
            return False
    elif any(_wild(a, request.action, ignore_case=True) for a in _listed(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_wild(_substitute(r, request.context), request.resource) for r in _listed(statement["Resource"])):
            return False
    elif any(_wild(_substitute(r, request.context), request.resource) for r in _listed(statement["NotResource"])):
        return False
    return all(_condition(op, key, expected, request.context)
               for op, block in statement.get("Condition", {}).items() for key, expected in block.items())


_POSITIVE = {
    "StringEquals": lambda e, v: e == v,
    "StringLike": lambda e, v: _wild(e, v),
    "ArnEquals": lambda e, v: e == v,
    "ArnLike": lambda e, v: _wild(e, v),
    "Bool": lambda e, v: e.lower() == v.lower(),
}
_NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals",
            "ArnNotLike": "ArnLike"}


def _condition(operator: str, key: str, expected: Any, context: Context) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    present = context.get(key)
    expected_values = [str(e) for e in ([expected] if isinstance(expected, (str, bool)) else expected)]
    if base == "Null":
        return (present is None) == (expected_values[0].lower() == "true")
    if present is None:
        return if_exists or qualifier == "ForAllValues" or base in _NEGATED
    values = _listed(present)
    positive = _POSITIVE[_NEGATED.get(base, base)]
    expected_values = [_substitute(e, context) for e in expected_values]

    def matches(value: str) -> bool:
        hit = any(positive(e, value) for e in expected_values)
        return not hit if base in _NEGATED else hit

    if qualifier == "ForAllValues":
        return all(matches(v) for v in values)
    return any(matches(v) for v in values)
