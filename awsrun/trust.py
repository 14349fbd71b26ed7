"""The project files the user trusts (which of their settings need it: awsrun.settings.NEEDS_TRUST).

A cloned repository's awsrun.toml (or [tool.awsrun]) is someone else's text: a ProxyCommand there would run
on this machine with the user's environment, AWS keys included, at the first command that connects. Settings
that run commands (here or on the instance) or widen who can reach what are honoured from a project file
only once the user ran `awsrun trust` on it, which records the file's path and the SHA-256 of its content
in AWSRUN_HOME/trusted.json (as `direnv allow` does): any change to the file asks again. Environment
variables and flags are the user's own, and always honoured.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from awsrun.errors import ConfigError, StateError
from awsrun.settings import CONFIG_FILE, needs_trust, project_file


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class TrustStore:
    """AWSRUN_HOME/trusted.json: {absolute path of a project file: SHA-256 of the content trusted}."""

    def __init__(self, root: Path):
        self.path = root / "trusted.json"

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable or torn: nothing is trusted, which asks again
        return data if isinstance(data, dict) else {}

    def is_trusted(self, file: Path, content: bytes) -> bool:
        return self._read().get(_key(file)) == digest(content)

    def trust(self, file: Path, content: bytes) -> str:
        entries = {**self._read(), _key(file): digest(content)}
        self._write(entries)
        return entries[_key(file)]

    def forget(self, file: Path) -> bool:
        entries = self._read()
        if entries.pop(_key(file), None) is None:
            return False
        self._write(entries)
        return True

    def _write(self, entries: dict[str, str]) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".trusted.")
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(entries, handle, indent=1, sort_keys=True)
                os.replace(temp, self.path)
            except BaseException:
                os.unlink(temp)
                raise
        except OSError as exc:
            raise StateError(f"cannot write {self.path}: {exc.strerror or exc}") from None


def trust_project(home_root: Path, project_dir: Path, *, forget: bool = False) -> tuple[Path, list[str]]:
    """Trust (or forget) the project's settings file as it is now. Returns its path and the settings in it
    that needed trust (with `forget`: whether it was trusted, as a one-item list or empty)."""
    found = project_file(project_dir)
    if found is None:
        raise ConfigError(f"{project_dir} has no {CONFIG_FILE} or [tool.awsrun] in pyproject.toml: nothing to trust",
                          hint="run `awsrun trust` in the project's directory")
    path, content, table = found
    store = TrustStore(home_root)
    if forget:
        return path, ["forgotten"] if store.forget(path) else []
    store.trust(path, content)
    return path, [name for name, value in (table if isinstance(table, dict) else {}).items() if needs_trust(name, value)]


def _key(file: Path) -> str:
    return os.path.realpath(file)
