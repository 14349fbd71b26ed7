"""`awsrun submit` of a hostile project, through the CLI to a loopback SSH host: names with spaces, quotes,
unicode, tabs, newlines and a leading dash arrive byte for byte; `.git` internals, .gitignore'd and
.awsrunignore'd files never leave; a symlink out of the project is never followed (warned, not sent),
one inside it stays a link; and nothing from outside the project reaches the instance.
(tests/test_sync.py shows the same rules on the sync functions; this is the whole command.)"""
from __future__ import annotations

import os
from pathlib import Path

from tests.harness.clusters import ssh_cluster  # noqa: F401  (fixture)

ODD_NAMES = ["with space.txt", "quote's \"double\".txt", "ünïcödé ☃.txt", "tab\there.txt", "new\nline.txt",
             "-dash.txt", "back\\slash.txt", "$(touch pwned).txt", "semi;colon.txt"]


def tree(root: Path) -> dict[str, str]:
    """{relative path: 'link -> target' or the file's text} of everything under root."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = Path(directory) / name
            rel = str(path.relative_to(root))
            found[rel] = f"link -> {os.readlink(path)}" if path.is_symlink() else path.read_text()
    return found


def test_submit_sends_odd_names_verbatim_and_nothing_it_must_not(cli, project, ssh_cluster, tmp_path):
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("OUTSIDE-SECRET\n")
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (project / "train.py").write_text("print('ok')\n")
    for index, name in enumerate(ODD_NAMES):
        (project / name).write_text(f"odd {index}\n")
    (project / "sub dir").mkdir()
    (project / "sub dir" / "ß.py").write_text("x = 1\n")
    (project / ".git" / "objects").mkdir(parents=True)
    (project / ".git" / "config").write_text("[remote] token = GIT-SECRET\n")
    (project / ".gitignore").write_text("ignored.txt\nbuild/\n")
    (project / "ignored.txt").write_text("IGNORED\n")
    (project / "build").mkdir()
    (project / "build" / "out.bin").write_text("BUILD\n")
    (project / ".awsrunignore").write_text("private/\n")
    (project / "private").mkdir()
    (project / "private" / "creds").write_text("PRIVATE\n")
    (project / "leak").symlink_to(secret)               # a file outside
    (project / "etc").symlink_to("/etc")                # a directory outside
    (project / "up").symlink_to("../outside-secret.txt")  # relative, outside
    (project / "inside").symlink_to("with space.txt")   # inside: stays a link

    result = cli("submit", "train.py")
    assert result.exit_code == 0, result
    for link in ("leak", "etc", "up"):
        assert f"not synced: symlink '{link}'" in result.stderr and "leads outside the project" in result.stderr

    expected = {name: f"odd {index}\n" for index, name in enumerate(ODD_NAMES)}
    expected.update({"pyproject.toml": "[project]\nname = 'demo'\n", "train.py": "print('ok')\n",
                     "sub dir/ß.py": "x = 1\n", ".gitignore": "ignored.txt\nbuild/\n",
                     ".awsrunignore": "private/\n", "inside": "link -> with space.txt"})
    remote = ssh_cluster.project(project)
    synced = {k: v for k, v in tree(remote).items() if not k.startswith("runs/")}
    assert synced == expected
    assert not (remote / "pwned").exists() and not (ssh_cluster.host.home / "pwned").exists()
    everything = b"".join(p.read_bytes() for p in ssh_cluster.host.home.rglob("*")
                          if p.is_file() and not p.is_symlink() and "venvs" not in p.parts)
    for marker in (b"OUTSIDE-SECRET", b"GIT-SECRET", b"IGNORED", b"BUILD", b"PRIVATE"):
        assert marker not in everything, marker
