"""SSH keys: awsrun's own ed25519 key in AWSRUN_HOME/keys/, or the user's (`--ssh-key PATH`).

The private key never leaves this machine: EC2 gets only the public half (import_key_pair).
"""
from __future__ import annotations

import os
import shlex
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from awsrun.errors import ConfigError
from awsrun.home import Home

GENERATED_NAME = "awsrun_ed25519"
_IMPORTABLE = ("ssh-ed25519", "ssh-rsa")  # what EC2's import_key_pair accepts


@dataclass(frozen=True)
class SshKey:
    private_path: Path
    public_key: str  # one OpenSSH line: "ssh-ed25519 AAAA... comment"
    generated: bool = False


def resolve_key(home: Home, ssh_key: str | None) -> SshKey:
    """The user's key when given, else awsrun's own (generated on first use)."""
    if ssh_key:
        return user_key(Path(os.path.expanduser(ssh_key)))
    return generated_key(home)


def generated_key(home: Home) -> SshKey:
    path = home.keys_dir / GENERATED_NAME
    if not path.exists():
        _generate(path)
    check_private_mode(path)
    return SshKey(path, _public_from_private(path), generated=True)


def user_key(path: Path) -> SshKey:
    check_private_mode(path)
    try:
        public = _public_from_private(path)
    except _Encrypted:
        public = _public_from_file(path)
    return SshKey(path, public)


def check_private_mode(path: Path) -> None:
    """Refuse a private key others can read, as OpenSSH does, with the fix in the hint."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"SSH key {path} does not exist", hint="check --ssh-key (or ssh_key in awsrun.toml)") from None
    except OSError as exc:
        raise ConfigError(f"SSH key {path} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"SSH key {path} is not a file")
    if mode & 0o077:
        raise ConfigError(
            f"SSH private key {path} is readable by other users (mode {stat.S_IMODE(mode):04o})",
            hint=f"chmod 600 {shlex.quote(str(path))}",
        )


class _Encrypted(Exception):
    pass


def _public_from_private(path: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    data = path.read_bytes()
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise _Encrypted(str(exc)) from None
    except (ValueError, serialization.UnsupportedAlgorithm) as exc:
        raise ConfigError(f"SSH key {path} cannot be read as a private key: {exc}") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)):
        raise ConfigError(f"SSH key {path} is a {type(key).__name__.replace('PrivateKey', '')} key",
                          hint="EC2 accepts ED25519 and RSA keys only: `ssh-keygen -t ed25519`")
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode()} awsrun"


def _public_from_file(private: Path) -> str:
    pub = private.with_name(private.name + ".pub")
    try:
        line = pub.read_text().strip()
    except OSError:
        raise ConfigError(
            f"SSH key {private} is passphrase-protected and has no {pub.name} next to it",
            hint=f"write it with `ssh-keygen -y -f {shlex.quote(str(private))} > {shlex.quote(str(pub))}`",
        ) from None
    if line.split()[:1] and line.split()[0] not in _IMPORTABLE:
        raise ConfigError(f"{pub} is not an ED25519 or RSA public key", hint="EC2 accepts ED25519 and RSA keys only")
    return line


def _generate(path: Path) -> None:
    """Write a new ed25519 key whole or not at all (temp file, then a hard link that refuses to replace)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(private)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:  # a concurrent awsrun generated it first: use theirs
            return
    finally:
        temp.unlink(missing_ok=True)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub = path.with_name(path.name + ".pub")
    pub.write_text(f"{public.decode()} awsrun@{socket.gethostname()}\n")
    pub.chmod(0o644)
