"""How use cases report progress without printing: the CLI passes a Reporter backed by awsrun.ui."""
from __future__ import annotations

from contextlib import contextmanager
from typing import ContextManager, Iterator, Protocol


class Phase(Protocol):
    def update(self, detail: str) -> None: ...


class Reporter(Protocol):
    def phase(self, label: str) -> ContextManager[Phase]:
        """A long step (a spinner with elapsed time on a terminal)."""
        ...

    def warn(self, message: str) -> None: ...

    def checkpoint(self, name: str) -> None:
        """A named point in a use case; the CLI's test hook AWSRUN_TEST_PAUSE_AT can stop there."""
        ...


class _SilentPhase:
    def update(self, detail: str) -> None:
        pass


class Silent:
    """A Reporter that shows nothing: for library use and tests. Collects warnings."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.checkpoints: list[str] = []

    @contextmanager
    def phase(self, label: str) -> Iterator[Phase]:
        yield _SilentPhase()

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def checkpoint(self, name: str) -> None:
        self.checkpoints.append(name)
