"""Settings: defaults < awsrun.toml ([tool.awsrun] in pyproject.toml) < AWSRUN_* environment < flags.

One frozen object. AWS credentials, profile, region and endpoint are NOT settings of ours: boto3's own
chain (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ...) provides them; `region` here only overrides.
A project file's settings that run commands or widen exposure need the user's trust
(NEEDS_TRUST here; the files the user trusts: awsrun.trust).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from awsrun.errors import ConfigError


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    cluster: str = field(default="default", metadata=_doc("cluster name used when --cluster is not given"))
    region: str | None = field(default=None, metadata=_doc("AWS region; default: AWS_REGION, then AWS_DEFAULT_REGION, then the profile's"))
    zone: str | None = field(default=None, metadata=_doc("availability zone; default: any (cheapest for spot)"))
    instance_type: str = field(default="g4dn.xlarge", metadata=_doc("EC2 instance type, or several in order of preference (g5.xlarge,g6.xlarge)"))
    gpu: str | None = field(default=None, metadata=_doc("`up`: any catalog type with this GPU model (T4, A10G, L4, ...), cheapest first"))
    regions: str | None = field(default=None, metadata=_doc("`up`: regions to try in order (us-east-1,us-west-2); default: the region setting"))
    retry_backoff: float = field(default=30.0, metadata=_doc("`up --retry-until-up`: seconds before the first new round (doubling, at most 10 min)"))
    spot: bool = field(default=False, metadata=_doc("launch spot capacity instead of on-demand"))
    max_price: float | None = field(default=None, metadata=_doc("spot: highest USD/hour to pay"))
    ami: str = field(default="ubuntu", metadata=_doc("'ubuntu' (22.04 LTS), 'dlami' (Deep Learning Base AMI) or an ami-... id"))
    volume_gb: int = field(default=100, metadata=_doc("root volume size in GB (gp3, encrypted)"))
    keep_volume: bool = field(default=False, metadata=_doc("keep the root volume when the instance is terminated"))
    ssh_key: str | None = field(default=None, metadata=_doc("private key to use instead of awsrun's generated one"))
    ssh_cidr: str | None = field(default=None, metadata=_doc("CIDR allowed to reach SSH; default: your own address /32"))
    ssh_user: str = field(default="ubuntu", metadata=_doc("login user on the instance"))
    ssh_proxy_command: str | None = field(default=None, metadata=_doc("OpenSSH-style ProxyCommand (%h %p %r) for bastions or SSM"))
    ssh_address: str = field(default="public_ip", metadata=_doc("what %h is: public_ip, private_ip or instance_id"))
    ssh_persist: str = field(default="10m", metadata=_doc("how long an SSH connection stays open for the next command (OpenSSH ControlPersist), e.g. 10m; 'off' disables"))
    ssh_timeout: float = field(default=600.0, metadata=_doc("seconds to wait for a new instance's SSH to answer"))
    caller_ip_url: str = field(default="https://checkip.amazonaws.com", metadata=_doc("where the default SSH CIDR looks up your address; 'off' disables"))
    venv: str = field(default="~/venvs/awsrun", metadata=_doc("virtualenv on the instance"))
    torch_spec: str | None = field(default=None, metadata=_doc("pip requirement for torch; default chosen from the GPU"))
    pip_args: str = field(default="", metadata=_doc("extra pip options for the bootstrap (e.g. --find-links DIR)"))
    remote_dir: str = field(default="~/awsrun", metadata=_doc("where projects are synced on the instance"))
    session: str = field(default="work", metadata=_doc("default tmux session name for jobs"))
    autostop: str | None = field(default=None, metadata=_doc("stop the instance after this long without jobs, e.g. 30m"))
    checkpoint_bucket: str | None = field(default=None, metadata=_doc("s3://bucket[/prefix] where submit mirrors each job's runs/SESSION, for `submit --recover`"))
    checkpoint_every: float = field(default=60.0, metadata=_doc("seconds between pushes of the S3 mirror (plus one when the job ends)"))


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))
CONFIG_FILE = "awsrun.toml"

# setting -> why a project file may not set it on its own
NEEDS_TRUST: dict[str, str] = {
    "ssh_proxy_command": "runs a command on this machine",
    "caller_ip_url": "decides who may reach SSH (your address comes from there)",
    "ssh_cidr": "decides who may reach SSH",
    "checkpoint_bucket": "decides where job outputs and the instance's S3 access go",
    "pip_args": "decides what pip installs and runs on the instance",
    "torch_spec": "decides what pip installs and runs on the instance",
    "ssh_key": "picks which of your private keys awsrun uses",
    "ami": "an ami-... id picks the image your code and data run on",
}
SAFE_AMIS = ("ubuntu", "dlami")


def needs_trust(name: str, value: object) -> bool:
    if name == "ami":
        return str(value) not in SAFE_AMIS
    return name in NEEDS_TRUST


def find_project_root(start: Path) -> Path:
    """The nearest directory at or above `start` holding awsrun.toml, pyproject.toml or .git; else `start`."""
    for candidate in (start, *start.parents):
        if any((candidate / marker).exists() for marker in (CONFIG_FILE, "pyproject.toml", ".git")):
            return candidate
    return start


def load_settings(
    project_dir: Path,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    trusted: Callable[[Path, bytes], bool] | None = None,
) -> Settings:
    """Resolve the settings for a project directory. Flags whose value is None are 'not given'.

    A project file's settings that run commands or widen exposure (awsrun.trust) are refused unless
    `trusted(file, content)` says the user trusted this content of the file."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    source_of: dict[str, str] = {}
    found = project_file(project_dir)
    for name, value, source in _file_values(found):
        values[name], source_of[name] = value, source
    for name in SETTING_NAMES:
        raw = env.get(f"AWSRUN_{name.upper()}")
        if raw is not None and raw != "":
            values[name], source_of[name] = raw, f"AWSRUN_{name.upper()}"
    for name, value in (flags or {}).items():
        if value is not None:
            values[name], source_of[name] = value, f"--{name.replace('_', '-')}"
    if found is not None:
        _check_trust(found, [n for n in values if source_of[n] == found[0].name], values, trusted)
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    coerced = {name: _coerce(fields[name], value, source_of[name]) for name, value in values.items()}
    for name, check in _CHECKS.items():
        if coerced.get(name) is not None:
            check(coerced[name], source_of[name])
    return Settings(**coerced)


_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+\Z")
_SSH_ADDRESSES = ("public_ip", "private_ip", "instance_id")


def cluster_flag(cluster: str, configured: str) -> str:
    """The ` --cluster NAME` a suggested command needs: '' only for the cluster the settings name without
    flags (awsrun.toml or AWSRUN_CLUSTER may name another than 'default'). The core, which sees settings
    with the flags merged in, passes DEFAULT_CLUSTER: exact unless a project or AWSRUN_CLUSTER names another."""
    return "" if cluster == configured else f" --cluster {cluster}"


DEFAULT_CLUSTER = "default"


def split_list(value: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the comma lists of instance_type and regions. Only spaces are
    stripped: a newline or tab stays, for the validators to refuse."""
    return [part.strip(" ") for part in (value or "").split(",") if part.strip(" ")]


def _check_instance_type(value: str, source: str) -> None:
    for one in split_list(value) or [value]:
        if not _INSTANCE_TYPE.match(one):
            raise ConfigError(f"{source}: instance_type {one!r} is not an EC2 instance type (like g4dn.xlarge)",
                              hint="`awsrun prices` lists the GPU types; several go comma-separated, in order")


# us-east-1, us-gov-west-1, eusc-de-east-1 (the European Sovereign Cloud): what every AWS region looks like,
# so a region newer than this botocore still passes
_REGION = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-\d{1,2}\Z")


def _check_regions(value: str, source: str) -> None:
    for one in split_list(value) or [value]:
        _check_region(one, source, otherwise="several regions go comma-separated, in order: us-east-1,us-west-2")


def _check_region(value: str, source: str,
                  otherwise: str = "`awsrun doctor` shows the region each source gives") -> None:
    """A typo (`us-east1`) is said here, not as a failed connection to a host that does not exist."""
    if not _REGION.match(value):
        raise ConfigError(f"{source}: {value!r} is not an AWS region (like us-east-1)",
                          hint=_nearest_region(value) or otherwise)


def _nearest_region(typed: str) -> str | None:
    """'did you mean us-east-1?' from the regions botocore knows (its data files: no call to AWS)."""
    import difflib

    from awsrun.providers.aws_clients import known_regions

    close = difflib.get_close_matches(typed.strip().lower(), known_regions(), n=1, cutoff=0.8)
    return f"did you mean {close[0]}?" if close else None


def _check_ssh_address(value: str, source: str) -> None:
    if value not in _SSH_ADDRESSES:
        raise ConfigError(f"{source}: ssh_address must be one of {', '.join(_SSH_ADDRESSES)}, got {value!r}",
                          hint=_fix_hint(source, "ssh_address", _SSH_ADDRESSES[0]))


def _check_remote_dir(value: str, source: str) -> None:
    """Absolute or under ~: a relative one lands wherever a command runs (on this machine: in the project)."""
    if not value.startswith(("/", "~")) or not value.isprintable():
        raise ConfigError(f"{source}: remote_dir {value!r} must be an absolute path or start with ~ (like ~/awsrun)",
                          hint=_fix_hint(source, "remote_dir", "~/awsrun"))


def _fix_hint(source: str, name: str, example: str, *, quoted: bool = True) -> str:
    """Where to correct a bad value, by where it came from: the variable, the flag or the file."""
    if source.startswith("AWSRUN_"):
        return f"e.g. `export {source}={example}`, or `unset {source}` for the default"
    if source.startswith("--"):
        return f"e.g. `{source} {example}`"
    value = f'"{example}"' if quoted else example
    return f"fix `{name}` in {source}, e.g. `{name} = {value}` (`awsrun config` shows every setting)"


def _check_checkpoint_bucket(value: str, source: str) -> None:
    from awsrun.job.checkpoints import parse_url

    try:
        parse_url(value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from None


_CHECKS = {"instance_type": _check_instance_type, "region": _check_region, "regions": _check_regions,
           "ssh_address": _check_ssh_address, "checkpoint_bucket": _check_checkpoint_bucket,
           "remote_dir": _check_remote_dir}


def project_file(project_dir: Path) -> tuple[Path, bytes, Any] | None:
    """(path, content, the awsrun table) of the project's settings file, or None when it has none."""
    path = project_dir / CONFIG_FILE
    if path.exists():
        content = _read_bytes(path)
        return path, content, _read_toml(path, content)
    pyproject = project_dir / "pyproject.toml"
    # no TOML spelling of [tool.awsrun] lacks the word: most projects' pyproject is never parsed
    if pyproject.exists():
        content = _read_bytes(pyproject)
        if b"awsrun" in content:
            tool = _read_toml(pyproject, content).get("tool", {})
            if not isinstance(tool, dict):
                raise ConfigError(f"{pyproject}: `tool` must be a table, got {_kind(tool)}",
                                  hint=_TABLE_HINT)
            table = tool.get("awsrun")
            return (pyproject, content, table) if table is not None else None
    return None


def _check_trust(found: tuple[Path, bytes, Any], names: list[str], values: Mapping[str, Any],
                 trusted: Callable[[Path, bytes], bool] | None) -> None:
    path, content, _ = found
    refused = [name for name in names if needs_trust(name, values[name])]
    if refused and not (trusted and trusted(path, content)):
        raise ConfigError(
            f"{path}: {', '.join(refused)} set by a project file you have not trusted "
            f"({NEEDS_TRUST[refused[0]]}): refusing to use it",
            hint=f"read {path}, then run `awsrun trust` in {path.parent}; or set "
                 f"AWSRUN_{refused[0].upper()} in your environment instead")


def _file_values(found: tuple[Path, bytes, Any] | None) -> list[tuple[str, Any, str]]:
    if found is None:
        return []
    path, _, table = found
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.awsrun] must be a table, got {_kind(table)}", hint=_TABLE_HINT)
    unknown = sorted(set(table) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {unknown[0]!r}",
            hint=f"known settings: {', '.join(SETTING_NAMES)}",
        )
    return [(name, value, str(path.name)) for name, value in table.items()]


_TABLE_HINT = 'put awsrun\'s settings under a `[tool.awsrun]` header, e.g. `[tool.awsrun]` then `cluster = "exp"`'


def _kind(value: Any) -> str:
    """What a TOML value is, for an error: 'a string', 'an array', ..."""
    names = {str: "a string", list: "an array", bool: "a boolean", int: "an integer", float: "a float"}
    return names.get(type(value), "a date or time")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _read_toml(path: Path, content: bytes) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(content.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    base = kind.replace(" | None", "")

    def bad(expected: str) -> ConfigError:
        example = "true" if base == "bool" else f.default if f.default not in (None, dataclasses.MISSING) else "..."
        return ConfigError(f"{source}: {f.name} must be {expected}, got {value!r}",
                           hint=_fix_hint(source, f.name, str(example), quoted=base not in ("bool", "int", "float")))

    if value is None:
        return None
    if base == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise bad("true or false")
    if base == "int":
        if isinstance(value, bool):
            raise bad("a whole number")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise bad("a whole number") from None
        if number <= 0:
            raise bad("a positive whole number")
        return number
    if base == "float":
        if isinstance(value, bool):
            raise bad("a number")
        try:
            number = float(str(value).strip())
        except ValueError:
            raise bad("a number") from None
        if not number > 0 or number == float("inf"):
            raise bad("a positive number")
        return number
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise bad("a string")
    return str(value)


def describe_settings() -> list[tuple[str, str, str]]:
    """(name, default, description) for the README's configuration reference and `awsrun config`."""
    rows = []
    for f in dataclasses.fields(Settings):
        rows.append((f.name, repr(f.default), f.metadata.get("doc", "")))
    return rows
