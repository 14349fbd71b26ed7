"""`status` says which local project each remote directory on a cluster holds, as `jobs` does: two
projects of one directory name from different places get two directories, each named with its own."""
from __future__ import annotations

import json
from pathlib import Path

from awsrun.job.projects import project_remote_dir
from tests.harness.clusters import local_cluster  # noqa: F401 (fixture)


def test_status_names_the_local_project_of_each_remote_directory(local_cluster, cli, tmp_path):
    projects = []
    for place in ("one", "two"):
        project = tmp_path / place / "app"
        project.mkdir(parents=True)
        (project / "pyproject.toml").write_text("[project]\nname = 'app'\n")
        (project / "job.py").write_text("print('hi')\n")
        submitted = cli("submit", "--name", place, "job.py", cwd=project)
        assert submitted.exit_code == 0, submitted.output
        projects.append(project)
    remote_dir = str(local_cluster.remote_dir)
    expected = {project_remote_dir(remote_dir, project): str(project) for project in projects}
    assert len(expected) == 2

    text = cli("status", "--cached")
    assert text.exit_code == 0, text.output
    rows = [line.split("\t") for line in text.stdout.splitlines()]
    assert ["cluster", "remote directory", "local project"] in rows
    assert {row[1]: row[2] for row in rows if len(row) == 3 and row[0] == "default"} == expected

    report = json.loads(cli("status", "--cached", "--json").stdout)
    (cluster,) = report["clusters"]
    assert {p["remote_dir"]: p["local"] for p in cluster["projects"]} == expected
    assert all(Path(local).is_dir() for local in expected.values())
