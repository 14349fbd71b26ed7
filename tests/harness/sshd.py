"""OpenSSH hosts on loopback addresses, one sshd process each, playing EC2 Ubuntu instances.

Each host has its own address (127.0.0.2, 127.0.0.3, ...), host key, and home for user `ubuntu`: sshd
runs in its own mount namespace where the host's home directory is bind-mounted on /home/ubuntu, and
a per-host TMUX_TMPDIR keeps the hosts' tmux servers apart. Key-only auth, like cloud images.
"""
from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

USER = "ubuntu"
SSHD = "/usr/sbin/sshd"
KEEP_IN_HOME = {"venvs", ".cache"}  # slow to rebuild; survives resets between tests
# pip on the hosts installs only from the local wheelhouse (`.ci/run` fills it): a job's requirements.txt,
# the bootstrap's torch or the mirror's boto3 never reach a package index from a test.
WHEELHOUSE = "/var/cache/awsrun-wheels"

SSHD_CONFIG = """\
ListenAddress {address}:{port}
HostKey {root}/ssh_host_ed25519_key
PidFile {root}/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers {user}
StrictModes yes
SetEnv TMUX_TMPDIR={root}/tmux PIP_NO_INDEX=1 PIP_FIND_LINKS={wheelhouse} PIP_CONFIG_FILE=/dev/null
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
LogLevel ERROR
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
"""


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@dataclass
class SshHost:
    name: str
    address: str
    port: int
    root: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmux_dir(self) -> Path:
        return self.root / "tmux"

    @property
    def authorized_keys(self) -> Path:
        return self.home / ".ssh" / "authorized_keys"

    @property
    def host_public_key(self) -> str:
        return (self.root / "ssh_host_ed25519_key.pub").read_text().strip()

    def start(self) -> "SshHost":
        user = pwd.getpwnam(USER)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        key = self.root / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        for directory, mode in ((self.home, 0o755), (self.home / ".ssh", 0o700), (self.tmux_dir, 0o700)):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, user.pw_uid, user.pw_gid)
            os.chmod(directory, mode)
        self.authorized_keys.touch(mode=0o600)
        os.chown(self.authorized_keys, user.pw_uid, user.pw_gid)
        config = self.root / "sshd_config"
        config.write_text(SSHD_CONFIG.format(address=self.address, port=self.port, root=self.root, user=USER,
                                              wheelhouse=WHEELHOUSE))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        mount_and_run = f"mount --bind {shlex.quote(str(self.home))} {user.pw_dir} && exec {SSHD} -D -e -f {shlex.quote(str(config))}"
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount_and_run],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "ab"),
        )
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = (self.root / "sshd.log").read_text()
                raise RuntimeError(f"sshd for {self.name} exited: {log[-2000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd for {self.name} did not listen on {self.address}:{self.port}")

    def authorize(self, public_key_line: str) -> None:
        """What cloud-init does on first boot: the key pair's public half into authorized_keys."""
        self.authorized_keys.write_text(public_key_line.strip() + "\n")

    def kill_jobs(self) -> None:
        subprocess.run(
            ["runuser", "-u", USER, "--", "env", f"TMUX_TMPDIR={self.tmux_dir}", "tmux", "-L", "awsrun", "kill-server"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def reset(self) -> None:
        """Back to a freshly booted instance, keeping slow-to-build venvs and pip caches."""
        self.kill_jobs()
        for entry in self.home.iterdir():
            if entry.name in KEEP_IN_HOME:
                continue
            if entry.name == ".ssh":
                self.authorized_keys.write_text("")
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def stop(self) -> None:
        self.kill_jobs()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_hosts(base: Path, count: int, first_octet: int = 2) -> list[SshHost]:
    hosts = []
    for index in range(count):
        address = f"127.0.0.{first_octet + index}"
        port = int(os.environ.get("AWSRUN_TEST_SSH_PORT") or free_port(address))
        hosts.append(SshHost(f"host{first_octet + index}", address, port, base / f"host{first_octet + index}").start())
    return hosts
