"""`awsrun doctor`: a checklist of what a launch needs, each check a plain function returning a `Check`.

`Report.as_dict()` is the stable `doctor --json` document (also in docs/doctor.md):

    {
      "schema": 1,
      "ok": true | false,              # false when any check failed; warnings do not fail
      "checks": [
        {
          "name": "region",            # stable identifiers, in this order: endpoint, region, credentials,
                                       # offering, quota, [candidates], tool.ssh, tool.rsync, tool.tmux,
                                       # keys, ssh-config
          "ok": true | false,
          "warning": true | false,     # ok, but worth saying loudly (e.g. AWS_ENDPOINT_URL set)
          "detail": "one line: what was found",
          "fix": "what to do" | null,  # null when there is nothing to do
          "data": {...}                # machine-readable facts of the check; keys per check in docs/doctor.md
        }, ...
      ]
    }

Keys only get added to this document, never renamed or removed, without raising "schema".
Nothing here prints, imports click or exits; boto3 and botocore are reached only through awsrun.providers
(its clients, and the wording of its errors).
"""
from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from awsrun.account import quota as quotas
from awsrun.errors import AwsrunError
from awsrun.home import Home
from awsrun.providers.aws_clients import AwsClients, chain_region, credentials_source
from awsrun.providers.aws_errors import (
    aws_error_code,
    botocore_errors,
    describe_aws_error,
)

SCHEMA = 1
# "candidates" comes after "quota" only when `up` has several candidates (types x regions) to try.
CHECK_NAMES = ("endpoint", "region", "credentials", "offering", "quota",
               "tool.ssh", "tool.rsync", "tool.tmux", "keys", "ssh-config")


class ChecksFailed(AwsrunError):
    """`awsrun doctor` found at least one failing check (its own exit code, for scripts)."""

    exit_code = 8


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    warning: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "warning": self.warning, "detail": self.detail,
                "fix": self.fix, "data": dict(self.data)}


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def as_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "ok": self.ok, "checks": [check.as_dict() for check in self.checks]}


# ------------------------------------------------------------------------------------------ checks

def check_endpoint(environ: Mapping[str, str]) -> Check:
    """AWS_ENDPOINT_URL (or a per-service AWS_ENDPOINT_URL_*) redirects every call: say so loudly."""
    set_vars = {k: v for k, v in sorted(environ.items()) if k.startswith("AWS_ENDPOINT_URL") and v}
    if not set_vars:
        return Check("endpoint", True, "AWS's own endpoints (AWS_ENDPOINT_URL not set)")
    shown = ", ".join(f"{k}={v}" for k, v in set_vars.items())
    return Check("endpoint", True,
                 f"WARNING: {shown}: AWS calls go to this endpoint (an emulator?), not to AWS",
                 fix=f"unset {' '.join(set_vars)} to talk to AWS", warning=True, data={"endpoints": set_vars})


def check_credentials(sts: Any) -> Check:
    """STS get_caller_identity: who AWS thinks we are, or why it refuses."""
    try:
        identity = sts.get_caller_identity()
    except botocore_errors() as exc:
        problem = describe_aws_error(exc, "STS GetCallerIdentity", "sts:GetCallerIdentity")
        return Check("credentials", False, problem.message, fix=problem.hint,
                     data={"error": aws_error_code(exc) or type(exc).__name__})
    account, arn = identity.get("Account", "?"), identity.get("Arn", "?")
    return Check("credentials", True, f"account {account} as {arn}", data={"account": account, "arn": arn})


def check_credentials_present(source: Callable[[], str | None]) -> Check:
    """Without a region STS cannot be asked; whether the chain has credentials at all is known locally."""
    try:
        found = source()
    except AwsrunError as exc:
        return Check("credentials", False, exc.message, fix=exc.hint)
    if found is None:
        return Check("credentials", False, "no AWS credentials found (and no region set: STS was not asked)",
                     fix="`aws configure` (or `aws sso login --profile NAME` and export AWS_PROFILE=NAME), or set "
                         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return Check("credentials", False, f"found ({found}) but not verified: STS needs a region",
                 fix="set the region (see the region check above); `awsrun doctor` then verifies them",
                 data={"source": found})


def check_region(region: str | None, source: str) -> Check:
    if region:
        return Check("region", True, f"{region} (from {source})", data={"region": region, "source": source})
    return Check("region", False, "no AWS region set",
                 fix="pass --region R, set AWS_REGION, or `aws configure set region R`")


def check_offering(ec2: Any, instance_type: str, region: str) -> Check:
    """describe_instance_type_offerings by availability zone."""
    try:
        zones = quotas.offered_zones(ec2, instance_type)
    except AwsrunError as exc:
        return Check("offering", False, exc.message, fix=exc.hint)
    if not zones:
        return Check("offering", False, f"{instance_type} is not offered in {region}",
                     fix=f"pick another type or region; `awsrun doctor --instance-type {instance_type} --region R` "
                         "checks another region", data={"instance_type": instance_type, "zones": []})
    return Check("offering", True, f"{instance_type} offered in {len(zones)} zone{'s' if len(zones) != 1 else ''}: "
                 f"{', '.join(zones)}", data={"instance_type": instance_type, "zones": list(zones)})


def quota_check(result: quotas.QuotaCheck) -> Check:
    """A QuotaCheck as a checklist line: enough, short (with the request command), or unknown (why)."""
    data: dict[str, Any] = {
        "instance_type": result.instance_type, "market": result.market, "count": result.count,
        "quota_name": result.quota_name, "quota_code": result.quota.code if result.quota else None,
        "limit": result.quota.value if result.quota else None,
        "source": result.quota.source if result.quota else None,
        "needed": result.needed, "usage": result.usage, "shortfall": result.shortfall,
    }
    if not result.known:
        return Check("quota", False, result.summary(), fix=result.fix, data=data)
    if result.ok:
        return Check("quota", True, result.summary(), data=data)
    return Check("quota", False, result.summary(),
                 fix=f"{result.request_command}   (approval takes minutes to a day)", data=data)


TOOL_PURPOSE = {
    "ssh": ("`awsrun attach` and `awsrun ssh` open an interactive ssh", False),
    "rsync": ("project sync to the instance", False),
    "tmux": ("jobs on this machine (`awsrun up --local`) only", True),
}


def check_candidates(candidates: tuple[tuple[str | None, str], ...], first: AwsClients,
                     clients_for: Callable[[str], AwsClients], count: int, spot: bool) -> Check:
    """The vCPU quota headroom of each candidate `up` would try (types x regions): fails when none fits."""
    made: dict[str, AwsClients] = {first.region: first}
    rows = []
    for region, instance_type in candidates:
        region = region or first.region
        if region not in made:
            made[region] = clients_for(region)
        result = quotas.check_quota(made[region], instance_type, count, spot, region)
        headroom = (result.quota.value - (result.usage or 0)) if result.quota is not None else None
        rows.append({"region": region, "instance_type": instance_type, "quota_code": result.quota.code
                     if result.quota else None, "headroom_vcpus": headroom, "needed_vcpus": result.needed,
                     "fits": result.ok if result.known else None, "fix": None if result.ok else
                     (result.request_command if result.known else result.problem)})
    fitting = [r for r in rows if r["fits"]]
    words = "; ".join(f"{r['region']} {r['instance_type']}: "
                      + (f"{quotas.fmt_number(r['headroom_vcpus'])} vCPUs free, needs {r['needed_vcpus']}"
                         if r["headroom_vcpus"] is not None else "quota unknown") for r in rows)
    short = [r["fix"] for r in rows if r["fits"] is False]
    return Check("candidates", bool(fitting) or not short, f"{len(fitting)} of {len(rows)} candidates fit the quota "
                 f"({words})", fix="; ".join(f"`{c}`" for c in short) or None,
                 warning=bool(short) and bool(fitting), data={"candidates": rows})


def check_tool(name: str, which: Callable[[str], str | None] = shutil.which) -> Check:
    purpose, optional = TOOL_PURPOSE[name]
    path = which(name)
    if path:
        return Check(f"tool.{name}", True, f"{name} at {path}", data={"path": path})
    fix = f"install {name} (Debian/Ubuntu: apt install {'openssh-client' if name == 'ssh' else name}; " \
          f"macOS: brew install {'openssh' if name == 'ssh' else name})"
    if optional:
        return Check(f"tool.{name}", True, f"{name} not on PATH: needed for {purpose}", fix=fix, warning=True,
                     data={"path": None})
    return Check(f"tool.{name}", False, f"{name} not on PATH: needed for {purpose}", fix=fix, data={"path": None})


def _private_key_files(keys_dir: Path) -> list[Path]:
    try:
        entries = sorted(keys_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [p for p in entries if p.is_file() and not p.name.endswith(".pub") and not p.name.startswith(".")]


def check_keys(keys_dir: Path, extra: Path | None = None) -> Check:
    """Private keys in AWSRUN_HOME/keys (and the configured ssh_key) readable by their owner only (0600)."""
    keys = _private_key_files(keys_dir)
    if extra is not None:
        if not extra.exists():
            return Check("keys", False, f"ssh_key {extra} does not exist",
                         fix="point ssh_key (--ssh-key / AWSRUN_SSH_KEY / awsrun.toml) at a private key file")
        keys.append(extra)
    if not keys:
        return Check("keys", True, f"no keys in {keys_dir} yet (`awsrun up` generates one)", data={"keys": {}})
    modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in keys}
    loose = [p for p, mode in modes.items() if mode & 0o077]
    data = {"keys": {p: f"{m:04o}" for p, m in modes.items()}}
    if loose:
        shown = ", ".join(f"{p} ({modes[p]:04o})" for p in loose)
        return Check("keys", False, f"private key readable by others: {shown}",
                     fix=f"chmod 600 {' '.join(shlex.quote(p) for p in loose)}", data=data)
    return Check("keys", True, f"{len(keys)} private key{'s' if len(keys) != 1 else ''}, all 0600 or stricter",
                 data=data)


def _include_targets(line_args: list[str], ssh_dir: Path) -> list[str]:
    targets = []
    for arg in line_args:
        expanded = os.path.expanduser(arg)
        if not os.path.isabs(expanded):  # relative Include paths are relative to ~/.ssh (ssh_config(5))
            expanded = str(ssh_dir / expanded)
        targets.append(expanded)
    return targets


def check_ssh_include(awsrun_ssh_config: Path, user_ssh_config: Path) -> Check:
    """When awsrun wrote an ssh config, ~/.ssh/config must Include it, before any Host/Match block."""
    if not awsrun_ssh_config.exists():
        return Check("ssh-config", True, f"no awsrun ssh config yet ({awsrun_ssh_config}): nothing to include",
                     data={"path": str(awsrun_ssh_config), "included": None})
    fix = f"add `Include {awsrun_ssh_config}` as the first line of {user_ssh_config}"
    try:
        lines = user_ssh_config.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        return Check("ssh-config", False, f"cannot read {user_ssh_config}: {exc.strerror or exc}", fix=fix)
    in_block = False
    wanted = str(awsrun_ssh_config)
    for raw in lines:
        words = raw.strip().replace("=", " ", 1).split()
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].lower()
        if keyword in ("host", "match"):
            in_block = True
        elif keyword == "include" and any(fnmatch.fnmatch(wanted, t)
                                          for t in _include_targets(words[1:], user_ssh_config.parent)):
            data = {"path": wanted, "included": not in_block}
            if in_block:
                return Check("ssh-config", False,
                             f"{user_ssh_config} includes {wanted} inside a Host/Match block, so it only "
                             "applies to that block", fix=f"move the Include line above the first Host line of "
                                                          f"{user_ssh_config}", data=data)
            return Check("ssh-config", True, f"{user_ssh_config} includes {wanted}", data=data)
    return Check("ssh-config", False, f"{user_ssh_config} does not include {wanted}: `ssh <instance>` "
                 "will not know awsrun's hosts", fix=fix, data={"path": wanted, "included": False})


def _not_checked(name: str, why: str) -> Check:
    return Check(name, False, f"not checked: {why}", fix="fix the checks above first")


# --------------------------------------------------------------------------------------- the run

def run_checks(
    *,
    home: Home,
    instance_type: str,
    spot: bool = False,
    count: int = 1,
    region: str | None = None,
    region_source: str = "--region",
    ssh_key: str | None = None,
    environ: Mapping[str, str] | None = None,
    user_ssh_config: Path | None = None,
    which: Callable[[str], str | None] = shutil.which,
    clients_for: Callable[[str], AwsClients] = AwsClients,
    candidates: tuple[tuple[str | None, str], ...] = (),
) -> Report:
    """Every check, in CHECK_NAMES order. `region` None means boto3's chain decides. `candidates`: the
    (region, type) pairs `up` would try, when there are several; the first is `region`/`instance_type`."""
    env = os.environ if environ is None else environ
    checks = [check_endpoint(env)]

    if region:
        source = region_source
    elif env.get("AWS_REGION"):
        source = "AWS_REGION"
    elif env.get("AWS_DEFAULT_REGION"):
        source = "AWS_DEFAULT_REGION"
    else:
        source = "the AWS profile"
    try:
        chain = chain_region()
        resolved = region or chain
        region_error = None
    except AwsrunError as exc:
        resolved, chain, region_error = region, None, exc
    region_flag = region if region and region != chain else None

    checks.append(check_region(resolved, source) if region_error is None else
                  Check("region", False, region_error.message, fix=region_error.hint))
    clients = clients_for(resolved) if resolved else None
    if clients is not None:
        try:
            credentials = check_credentials(clients.sts)
        except AwsrunError as exc:  # e.g. the profile named by AWS_PROFILE does not exist
            credentials = Check("credentials", False, exc.message, fix=exc.hint)
    elif region_error is not None:
        credentials = Check("credentials", False, region_error.message, fix=region_error.hint)
    else:
        credentials = check_credentials_present(credentials_source)
    checks.append(credentials)

    if clients is None or not credentials.ok:
        why = "no region" if clients is None else "the credentials do not work"
        checks += [_not_checked("offering", why), _not_checked("quota", why)]
    else:
        checks.append(check_offering(clients.ec2, instance_type, clients.region))
        checks.append(quota_check(quotas.check_quota(clients, instance_type, count, spot, region_flag)))
        if len(candidates) > 1:
            checks.append(check_candidates(candidates, clients, clients_for, count, spot))

    checks += [check_tool(name, which) for name in ("ssh", "rsync", "tmux")]
    checks.append(check_keys(home.keys_dir, Path(os.path.expanduser(ssh_key)) if ssh_key else None))
    checks.append(check_ssh_include(home.ssh_config, user_ssh_config or Path.home() / ".ssh" / "config"))
    return Report(tuple(checks))
