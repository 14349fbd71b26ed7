"""The errors awsrun reports to users: a one-line message, a hint naming the next step, an exit code.

They are turned into output and an exit status in exactly one place (`awsrun.cli.main`).
"""
from __future__ import annotations


class AwsrunError(Exception):
    """Base class: something the user can act on. Never shown with a traceback unless --debug."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(AwsrunError):
    """A setting, flag or config file that cannot be used."""

    exit_code = 2


class StateError(AwsrunError):
    """The local state in AWSRUN_HOME cannot be read or written."""

    exit_code = 3


class CloudError(AwsrunError):
    """The cloud refused or failed a request (mapped from AWS error codes)."""

    exit_code = 4


class RemoteError(AwsrunError):
    """An instance could not be reached, or a command on it failed."""

    exit_code = 5


class HostKeyError(RemoteError):
    """A host presented a key other than the one pinned for it: possible interception."""

    exit_code = 6


class NotFoundError(AwsrunError):
    """A cluster, instance, job or file that does not exist."""

    exit_code = 7


class NotImplementedYet(AwsrunError):
    """A verb whose implementation has not landed yet; says so instead of pretending."""

    exit_code = 1


class Interrupted(AwsrunError):
    """Ctrl-C: what was done is recorded; the hint says how to resume or clean up."""

    exit_code = 130
