"""What every command needs: where the project is, AWSRUN_HOME, and the settings resolved for a flag set."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awsrun.home import Home
from awsrun.settings import Settings, find_project_root, load_settings


@dataclass(frozen=True)
class AppContext:
    cwd: Path
    project_dir: Path
    home: Home

    @classmethod
    def from_environment(cls) -> "AppContext":
        cwd = Path.cwd()
        return cls(cwd=cwd, project_dir=find_project_root(cwd), home=Home.from_env())

    def settings(self, **flags: Any) -> Settings:
        from awsrun.trust import TrustStore

        return load_settings(self.project_dir, os.environ, flags, trusted=TrustStore(self.home.root).is_trusted)
