"""SSH through the system OpenSSH client, with one master connection per node kept open between awsrun
commands (ControlMaster/ControlPersist): the everyday path (submit, logs, jobs, pull, kill, attach, ssh,
tunnel), which imports no paramiko and pays no handshake while the master lives.

The first command to a node becomes its master (ControlMaster=auto); the master stays in the
background for `ssh_persist` seconds after its last session, then exits and removes its socket. A
socket whose master died (killed, host gone) is unlinked by ssh itself, which then connects afresh and
becomes the new master. Sockets live in AWSRUN_HOME/sockets (0700; ssh makes them 0600), named
`CLUSTER.NODE.DIGEST`, the digest covering every option that decides where and how the connection goes,
so a master is never shared by a different key, proxy or pinned host.

Host keys: StrictHostKeyChecking=yes against awsrun's known_hosts. A node whose key is not pinned yet
never comes here: awsrun.cluster.access sends its first contact through paramiko, which pins the key (checked
against the fingerprints EC2 printed at boot).
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from awsrun.errors import HostKeyError, RemoteError
from awsrun.remote.base import Command, LineSink, Result, as_shell
from awsrun.remote.hostkeys import forget_hint
from awsrun.remote.process import stream_output
from awsrun.remote.target import SshTarget

# A unix socket path holds at most 103 bytes on macOS (107 on Linux), and ssh first binds `PATH.` + 16
# random characters, then renames: a longer path is given relative to the sockets directory, with ssh
# run from there.
SOCKET_PATH_MAX = 103 - 17
KEEPALIVE = ["-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"]
_STALE_NOTE = re.compile(r"^(Control socket connect\(.*\): .*|ControlSocket .* already exists, disabling multiplexing)$")
_MUX_BROKE = ("mux_client_", "master hung up", "Control socket", "muxclient")
_HOST_KEY = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
             "No ED25519 host key is known", "host key for", "Host key for")
_UNREACHABLE = ("Connection refused", "Connection timed out", "Could not resolve", "kex_exchange_identification",
                "Connection closed by", "Connection reset", "No route to host", "ssh: connect to host",
                "ProxyCommand", "UNKNOWN port", "Network is unreachable", "banner exchange")


def parse_persist(text: str | None) -> int:
    """`ssh_persist` -> seconds: '10m', '90s', '1h', '600'; '0', 'off', 'no' -> 0 (no kept connection)."""
    value = (text or "").strip().lower()
    if value in ("", "0", "off", "no", "false", "none"):
        return 0
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", value)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 10m, 90s, 1h, or off")
    return int(float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)])


def socket_name(cluster: str, node: int, target: SshTarget) -> str:
    what = "\0".join([target.user, target.host, str(target.port), target.alias, str(target.key_path),
                      str(target.known_hosts), target.proxy_command or ""])
    return f"{cluster}.{node}.{hashlib.sha256(what.encode()).hexdigest()[:12]}"


def prepare_directory(directory: Path) -> bool:
    """Make the sockets directory private (0700, ours, not a symlink). False when it cannot be."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(directory, 0o700)
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Control:
    """One node's master socket and how long the master outlives its last session."""

    directory: Path
    name: str
    persist_s: int

    @property
    def path(self) -> Path:
        return self.directory / self.name

    @property
    def fits(self) -> bool:
        return len(os.fsencode(self.path)) <= SOCKET_PATH_MAX

    def options(self, master: str = "auto", *, absolute_only: bool = False) -> tuple[list[str], Path | None]:
        """(ssh options, the cwd to run ssh in). With `absolute_only`, no options when the path is too
        long to give absolutely (for argv that is exec'd where awsrun cannot pick the cwd)."""
        if self.fits:
            where, cwd = str(self.path), None
        elif absolute_only:
            return [], None
        else:
            where, cwd = self.name, self.directory
        options = ["-o", f"ControlMaster={master}", "-o", f"ControlPath={where.replace('%', '%%')}"]
        if master != "no":
            options += ["-o", f"ControlPersist={self.persist_s}"]
        return options, cwd


class OpenSshRemote:
    """Commands through `ssh` multiplexed over the node's master; stdin, stdout and stderr are the ssh
    process's own pipes. Nothing to close: the master outlives the awsrun command on purpose."""

    def __init__(self, target: SshTarget, control: Control | None):
        self.target = target
        self.control = control
        self.name = target.alias

    # --- running commands -------------------------------------------------------------------------
    def argv(self, text: str) -> tuple[list[str], Path | None]:
        options, cwd = self.control.options() if self.control else ([], None)
        return ["ssh", "-T", *self.target.openssh_options(), "-o", "LogLevel=ERROR", *KEEPALIVE, *options,
                self.target.destination, text], cwd

    def run(
        self,
        command: Command,
        *,
        stdin: bytes | None = None,
        on_line: LineSink | None = None,
        timeout: float | None = None,
    ) -> Result:
        text = as_shell(command)
        code, out, err = self._exec(text, stdin, on_line, timeout)
        return Result(text, code, out.decode(errors="replace"), err.decode(errors="replace"))

    def _exec(self, text: str, stdin: bytes | None, on_line: LineSink | None,
              timeout: float | None) -> tuple[int, bytes, bytes]:
        for attempt in (1, 2):
            argv, cwd = self.argv(text)
            code, out, err = _spawn(argv, cwd, stdin, on_line, timeout)
            err = b"".join(line for line in err.splitlines(keepends=True)
                           if not _STALE_NOTE.match(line.decode(errors="replace").strip()))
            # the master went away between the socket check and the session: nothing ran, try once more
            if code == 255 and attempt == 1 and not out and any(m.encode() in err for m in _MUX_BROKE):
                continue
            # a silent 255: the remote command's own, or a master whose server side is gone (the host
            # rebooted, its sshd sessions killed): such a master fails the session and exits
            if code == 255 and attempt == 1 and not out and not err.strip() and not self._master_works():
                continue
            break
        if code == 255:
            self._raise_for(err.decode(errors="replace"))
        return code, out, err

    def _master_works(self) -> bool:
        """True when the node's master answers and opens a session (or there is no master to blame)."""
        if self.control is None:
            return True
        try:
            if master_pid(self.control) is None:
                return False
            options, cwd = self.control.options("no")
            probe = subprocess.run(["ssh", "-T", *self.target.openssh_options(), "-o", "LogLevel=ERROR", *options,
                                    self.target.destination, "true"], cwd=cwd, stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return probe.returncode == 0

    def _raise_for(self, stderr: str) -> None:
        """Exit 255 with ssh's own complaint is ssh failing, not the remote command: say what failed."""
        t = self.target
        detail = next((line.strip() for line in stderr.splitlines() if line.strip()), "")
        if any(marker in stderr for marker in _HOST_KEY):
            raise HostKeyError(f"host key of {t.alias} does not match the one pinned: refusing to connect "
                               f"(possible interception): {detail}", hint=forget_hint(t.alias, t.known_hosts))
        if "Permission denied" in stderr:
            raise RemoteError(f"SSH login as {t.user}@{t.host} was refused: {detail}",
                              hint="check the key pair and the login user (--ssh-key, ssh_user)")
        if any(marker in stderr for marker in _UNREACHABLE):
            raise RemoteError(f"SSH to {t.user}@{t.host}:{t.port} did not answer: {detail}",
                              hint="check that the instance is running (`awsrun status`) and that --ssh-cidr admits you")

    def wait_ready(self, wait_s: float, *, retry_auth: bool = False) -> "OpenSshRemote":
        """Run `true` until SSH answers (a booting instance), for up to `wait_s` seconds."""
        deadline, delay = time.monotonic() + wait_s, 0.5
        while True:
            try:
                result = self.run("true", timeout=max(30.0, wait_s))
                if result.ok:
                    return self
                error: RemoteError = RemoteError(f"`true` exited {result.exit_code} on {self.name}: "
                                                 f"{result.stderr.strip()[:200]}")
            except HostKeyError:
                raise
            except RemoteError as exc:
                if "refused" in exc.message and "login" in exc.message and not retry_auth:
                    raise
                error = exc
            if time.monotonic() + delay > deadline:
                raise error
            time.sleep(delay)
            delay = min(delay * 1.6, 5.0)

    # --- files -----------------------------------------------------------------------------------
    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        """Write whole or not at all: a temp name, then an atomic rename."""
        path = _quote_path(remote_path)
        temp = _quote_path(f"{remote_path}.awsrun-tmp")
        code, _, err = self._exec(f"cat > {temp} && chmod {mode:o} {temp} && mv -f {temp} {path}", data, None, None)
        if code != 0:
            raise RemoteError(f"cannot write {remote_path} on {self.name}: {_first_line(err)}")

    def get_bytes(self, remote_path: str) -> bytes:
        path = _quote_path(remote_path)
        code, out, err = self._exec(f"if [ -f {path} ]; then exec cat {path}; else exit 66; fi", None, None, None)
        if code == 66:
            raise RemoteError(f"{remote_path} does not exist on {self.name}")
        if code != 0:
            raise RemoteError(f"cannot read {remote_path} on {self.name}: {_first_line(err)}")
        return out

    def sftp(self):
        """An SFTP session over the node's master: `ssh -s DEST sftp`, paramiko's client on its pipes."""
        from awsrun.remote import sftp_pipe
        from awsrun.remote.ssh import sftp_over

        argv, cwd = self.argv("sftp")
        return sftp_over(sftp_pipe.start([*argv[:-2], "-s", argv[-2], "sftp"], cwd, self.name), self.name)

    # --- terminals and tunnels -------------------------------------------------------------------
    def interactive_argv(self, command: Command | None = None) -> list[str]:
        """The system ssh for a real terminal (attach, ssh, tunnel), over the node's master when there is
        one (ControlMaster=no: a terminal never becomes a master, so it never lingers in the background)."""
        options = self.control.options("no", absolute_only=True)[0] if self.control else []
        argv = ["ssh", "-t", "-q", *self.target.openssh_options(), *KEEPALIVE, *options, self.target.destination]
        if command is not None:
            argv.append(as_shell(command))
        return argv

    def close(self) -> None:
        """Nothing: the master stays for the next command until `ssh_persist` runs out."""


# --- masters -----------------------------------------------------------------------------------------

def master_pid(control: Control) -> int | None:
    """The master's pid when it answers on its socket (`ssh -O check`), else None."""
    completed = subprocess.run(["ssh", "-o", f"ControlPath={control.name}", "-O", "check", "awsrun-master"],
                               cwd=control.directory, capture_output=True, text=True, timeout=10)
    match = re.search(r"pid=(\d+)", completed.stderr)
    return int(match.group(1)) if completed.returncode == 0 and match else None


def close_masters(sockets_dir: Path, cluster: str | None) -> list[str]:
    """Ask every master of `cluster` (None: of every cluster) to exit (`ssh -O exit`); remove sockets
    nobody answers on. Returns the socket names that were closed or removed."""
    if not sockets_dir.is_dir():
        return []
    closed = []
    pattern = "*.*" if cluster is None else f"{glob_escape(cluster)}.*"
    for path in sorted(sockets_dir.glob(pattern)):
        try:
            subprocess.run(["ssh", "-o", f"ControlPath={path.name}", "-O", "exit", "awsrun-master"],
                           cwd=sockets_dir, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                path.unlink()
        except FileNotFoundError:
            pass
        closed.append(path.name)
    return closed


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# --- helpers ----------------------------------------------------------------------------------------

def _spawn(argv: list[str], cwd: Path | None, stdin: bytes | None, on_line: LineSink | None,
           timeout: float | None) -> tuple[int, bytes, bytes]:
    try:
        process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise RemoteError(f"cannot run the system ssh: {exc.strerror or exc}",
                          hint="install the OpenSSH client, or set ssh_persist = 'off' to use awsrun's own") from None
    try:
        if on_line is None:
            try:
                out, err = process.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RemoteError(f"remote command did not finish within {timeout:.0f}s") from None
            return process.returncode, out, err
        return stream_output(process, stdin, on_line, timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _quote_path(path: str) -> str:
    """Quote a remote path for the shell, letting a leading ~/ expand."""
    if path == "~" or path.startswith("~/"):
        return "~" + (("/" + shlex.quote(path[2:])) if len(path) > 2 else "")
    return shlex.quote(path)


def _first_line(err: bytes) -> str:
    return next((line.strip() for line in err.decode(errors="replace").splitlines() if line.strip()), "no output")
