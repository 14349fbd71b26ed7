"""`awsrun ssh-config --install` on a ~/.ssh/config that is a symlink (dotfiles kept in a repository):
the link stays a link, the file it points to gets the Include. The real CLI, a temp HOME."""
from __future__ import annotations

import os


def test_install_writes_through_a_symlinked_user_config(cli, tmp_path):
    user_home = tmp_path / "user-home"
    (user_home / ".ssh").mkdir(parents=True)
    dotfiles = tmp_path / "dotfiles" / "ssh"
    dotfiles.mkdir(parents=True)
    (dotfiles / "config").write_text("Host other\n    User me\n")
    (dotfiles / "config").chmod(0o640)
    link = user_home / ".ssh" / "config"
    link.symlink_to(os.path.relpath(dotfiles / "config", link.parent))

    installed = cli("ssh-config", "--install", env={"HOME": str(user_home)})

    assert installed.exit_code == 0, installed
    assert link.is_symlink() and link.resolve() == (dotfiles / "config").resolve()
    text = (dotfiles / "config").read_text()
    assert text.count("Include") == 1 and text.index("Include") < text.index("Host other")
    assert text.endswith("Host other\n    User me\n")
    assert oct((dotfiles / "config").stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in dotfiles.iterdir()) == ["config"]  # no temporary file left beside it
    assert "already there" in cli("ssh-config", "--install", env={"HOME": str(user_home)}).stderr
