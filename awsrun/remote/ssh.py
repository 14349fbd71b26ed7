"""SSH to an instance with paramiko: the only module that imports it.

One connection per awsrun command, reused for every step of it. A ProxyCommand (OpenSSH tokens
%h %p %r) reaches hosts behind bastions or SSM, and is how the test harness reaches loopback sshds.
"""
from __future__ import annotations

import base64
import logging
import select
import socket
import time
from collections import deque
from pathlib import Path
from typing import Iterator

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_FSETSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTPError,
    int64,
)

from awsrun.errors import HostKeyError, RemoteError
from awsrun.remote.base import Command, FileChanged, LineSink, Result, as_shell
from awsrun.remote.hostkeys import KnownHosts
from awsrun.remote.target import SshTarget

# paramiko logs a failed handshake from its transport thread, traceback and all; with no handler of ours
# Python's last-resort handler printed it to the terminal before awsrun's own one-line error
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CHUNK = 64 * 1024
SFTP_READ = 32 * 1024  # the read size every SFTP server serves whole


def load_private_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise RemoteError(f"SSH key {path} does not exist", hint="check --ssh-key or AWSRUN_HOME/keys") from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise RemoteError(f"SSH key {path} cannot be loaded: {exc}") from None


def connect(target: SshTarget, *, wait_s: float = 0.0, retry_auth: bool = False) -> "SshRemote":
    """Connect, retrying with backoff for up to `wait_s` seconds while the host boots."""
    key = load_private_key(target.key_path)
    deadline = time.monotonic() + wait_s
    delay = 0.5
    while True:
        try:
            return SshRemote(target, _open_client(target, key))
        except HostKeyError:
            raise
        except paramiko.AuthenticationException as exc:
            if not retry_auth or time.monotonic() + delay > deadline:
                raise RemoteError(
                    f"SSH login as {target.user}@{target.host} was refused: {exc}",
                    hint="check the key pair and the login user (--ssh-key, ssh_user)",
                ) from None
            last_error: Exception = exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            last_error = exc
        if time.monotonic() + delay > deadline:
            raise RemoteError(
                f"SSH to {target.user}@{target.host}:{target.port} did not answer: {_describe(last_error)}",
                hint="check that the instance is running (`awsrun status`) and that --ssh-cidr admits you",
            )
        time.sleep(delay)
        delay = min(delay * 1.6, 5.0)


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _open_client(target: SshTarget, key: paramiko.PKey) -> paramiko.SSHClient:
    proxy = target.proxy_argv_string()
    sock: socket.socket | paramiko.ProxyCommand
    if proxy:
        sock = paramiko.ProxyCommand(proxy)
    else:
        sock = socket.create_connection((target.host, target.port), timeout=10)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_PinningPolicy(target))
    try:
        client.connect(
            hostname=target.alias,
            port=22,  # with `sock` given, the port only names the host key; the alias alone names it
            username=target.user,
            pkey=key,
            sock=sock,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
            allow_agent=False,
            look_for_keys=False,
        )
    except BaseException:
        client.close()
        if isinstance(sock, paramiko.ProxyCommand):
            sock.close()
        raise
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client


class _PinningPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, target: SshTarget):
        self.target = target

    def missing_host_key(self, client, hostname, key) -> None:  # noqa: ANN001 (paramiko's signature)
        KnownHosts(self.target.known_hosts).check(
            self.target.alias, key.get_name(), base64.b64encode(key.asbytes()).decode(),
            self.target.expected_fingerprints,
        )


class SshRemote:
    """A live SSH connection: run commands, move bytes; closed at the end of the awsrun command."""

    def __init__(self, target: SshTarget, client: paramiko.SSHClient):
        self.target = target
        self.name = target.alias
        self._client = client
        self._sftp: paramiko.SFTPClient | None = None

    def run(
        self,
        command: Command,
        *,
        stdin: bytes | None = None,
        on_line: LineSink | None = None,
        timeout: float | None = None,
    ) -> Result:
        text = as_shell(command)
        try:
            channel = self._transport().open_session()
            channel.exec_command(text)
            out, err = _pump(channel, stdin, on_line, timeout)
            code = channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise RemoteError(f"connection to {self.name} broke while running a command: {_describe(exc)}",
                              hint="re-run the command; awsrun resumes where it stopped") from None
        return Result(text, code, out.decode(errors="replace"), err.decode(errors="replace"))

    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        """Write whole or not at all: a temp name, then an atomic rename."""
        sftp = self._sftp_client()
        temp = f"{remote_path}.awsrun-tmp"
        try:
            with sftp.open(temp, "wb") as handle:
                handle.write(data)
            sftp.chmod(temp, mode)
            sftp.posix_rename(temp, remote_path)
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(f"cannot write {remote_path} on {self.name}: {_describe(exc)}") from None

    def get_bytes(self, remote_path: str) -> bytes:
        try:
            with self._sftp_client().open(remote_path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise RemoteError(f"{remote_path} does not exist on {self.name}") from None
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(f"cannot read {remote_path} on {self.name}: {_describe(exc)}") from None

    def interactive_argv(self, command: Command | None = None) -> list[str]:
        """The system ssh with the same key, pinned host key and proxy, for a real terminal."""
        argv = ["ssh", "-t", "-q", *self.target.openssh_options(), self.target.destination]
        if command is not None:
            argv.append(as_shell(command))
        return argv

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self._client.close()

    def _transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(f"connection to {self.name} is closed", hint="re-run the command")
        return transport

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self._client.open_sftp()
        return self._sftp

    def sftp(self) -> paramiko.SFTPClient:
        """A new SFTP session on this connection, for the caller to close (awsrun.transfer.sftp_push)."""
        try:
            return self._client.open_sftp()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise RemoteError(f"cannot open SFTP to {self.name}: {_describe(exc)}",
                              hint="the instance's sshd needs its sftp subsystem (`Subsystem sftp ...`)") from None


# what a broken SFTP session raises (SFTPError: packets that make no sense)
SFTP_ERRORS = (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError)


def read_ahead(handle: paramiko.SFTPFile, size: int, window: int = 64) -> Iterator[bytes]:
    """The first `size` bytes of an open SFTP file, in order, `window` reads of 32 KB in flight: one
    round trip per window, not per read, in at most `window` x 32 KB of memory. paramiko's own
    prefetch buffers without bound when the reader is slower than the wire (measured: 345 MB for a
    300 MB file), and its plain reads wait a round trip each. A short read (the file shrank) or the
    file's end before `size` raises FileChanged, and so does a last read past `size` (sent with the
    others, no round trip of its own) that finds more."""
    sftp, pending, offset = handle.sftp, deque(), 0

    def ask() -> None:
        nonlocal offset
        length = min(SFTP_READ, size - offset) if offset < size else 1  # the last: is there more?
        pending.append((sftp._async_request(type(None), CMD_READ, handle.handle, int64(offset), length), length))
        offset += length

    while offset <= size and len(pending) < window:
        ask()
    while pending:
        number, length = pending.popleft()
        try:
            kind, message = sftp._read_response(number)  # answers come in order; a stale one is dropped
        except EOFError:
            if pending or offset <= size:
                raise FileChanged("it ended before its listed size") from None
            return  # the read past the end found nothing: the file is as listed
        if kind != CMD_DATA:
            raise SFTPError(f"expected data, got packet type {kind}")
        data = message.get_string()
        if offset > size and not pending:
            raise FileChanged("it holds more than its listed size")
        if len(data) != length:
            raise FileChanged("a short read")
        if offset <= size:
            ask()
        yield data


def put_small_files(sftp: paramiko.SFTPClient, items: list) -> list[Exception | None]:
    """Small files written whole, pipelined (the server answers in order): the opens of all of them in one
    round trip, their writes, modes and times and closes in a second, and in a third the renames into
    place of those that met no error (a rename never follows a write that failed). `items`: objects
    with temp, target, data, mode, seconds. -> per item None, or its first error."""
    opened = [sftp._async_request(type(None), CMD_OPEN, item.temp, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE |
                                  SFTP_FLAG_TRUNC, paramiko.SFTPAttributes()) for item in items]
    errors: list[Exception | None] = [None] * len(items)
    handles = [_answer(sftp, number, errors, index) for index, number in enumerate(opened)]
    asked = []
    for index, (item, handle) in enumerate(zip(items, handles)):
        if handle is None:
            continue
        numbers = [sftp._async_request(type(None), CMD_WRITE, handle, int64(offset), item.data[offset:offset + SFTP_READ])
                   for offset in range(0, len(item.data), SFTP_READ)]
        attrs = paramiko.SFTPAttributes()
        attrs.st_mode, attrs.st_atime, attrs.st_mtime = item.mode, item.seconds, item.seconds
        numbers.append(sftp._async_request(type(None), CMD_FSETSTAT, handle, attrs))
        numbers.append(sftp._async_request(type(None), CMD_CLOSE, handle))
        asked.append((index, numbers))
    for index, numbers in asked:
        for number in numbers:
            _answer(sftp, number, errors, index)
    renamed = [(index, sftp._async_request(type(None), CMD_EXTENDED, "posix-rename@openssh.com", items[index].temp,
                                           items[index].target)) for index, _ in asked if errors[index] is None]
    for index, number in renamed:
        _answer(sftp, number, errors, index)
    return errors


def get_small_files(sftp: paramiko.SFTPClient, items: list[tuple[str, int]]) -> list:
    """Small files read whole, pipelined: the opens of all of them in one round trip, then each file's
    reads, one read past its listed size and its close in a second. `items`: (path, listed size).
    -> per item its bytes, or the error: FileChanged when it holds fewer or more bytes than listed."""
    opened = [sftp._async_request(type(None), CMD_OPEN, path, SFTP_FLAG_READ, paramiko.SFTPAttributes())
              for path, _ in items]
    errors: list[Exception | None] = [None] * len(items)
    handles = [_answer(sftp, number, errors, index) for index, number in enumerate(opened)]
    asked = []
    for index, ((_, size), handle) in enumerate(zip(items, handles)):
        if handle is None:
            continue
        reads = [(sftp._async_request(type(None), CMD_READ, handle, int64(offset), min(SFTP_READ, size - offset)),
                  min(SFTP_READ, size - offset)) for offset in range(0, size, SFTP_READ)]
        probe = sftp._async_request(type(None), CMD_READ, handle, int64(size), 1)
        asked.append((index, reads, probe, sftp._async_request(type(None), CMD_CLOSE, handle)))
    out: list = list(errors)
    for index, reads, probe, close in asked:
        chunks = []
        for number, length in reads:
            data = _data(sftp, number)
            chunks.append(data)
            if out[index] is None and (data is None or len(data) != length):
                out[index] = FileChanged("it ended before its listed size")
        if _data(sftp, probe) and out[index] is None:
            out[index] = FileChanged("it holds more than its listed size")
        _answer(sftp, close, errors, index)
        if out[index] is None:
            out[index] = b"".join(chunks)
    return out


def _data(sftp: paramiko.SFTPClient, number: int) -> bytes | None:
    """A read's bytes, or None at the file's end (or any error status)."""
    try:
        kind, message = sftp._read_response(number)
    except (OSError, EOFError, SFTPError):
        return None
    return message.get_string() if kind == CMD_DATA else None


def _answer(sftp: paramiko.SFTPClient, number: int, errors: list, index: int):
    """The handle an answer carries (None for a status), the first error of item `index` kept."""
    try:
        kind, message = sftp._read_response(number)
    except (OSError, SFTPError) as exc:  # an error status: this item's, the session goes on
        errors[index] = errors[index] or exc
        return None
    return message.get_binary() if kind == CMD_HANDLE else None


def sftp_over(channel, where: str) -> paramiko.SFTPClient:
    """paramiko's SFTP client over any byte channel (awsrun.remote.sftp_pipe: the system ssh's pipes)."""
    try:
        return paramiko.SFTPClient(channel)
    except SFTP_ERRORS as exc:
        detail = getattr(channel, "complaint", lambda: "")() or _describe(exc)
        channel.close()
        raise RemoteError(f"cannot open SFTP to {where}: {detail}",
                          hint="the instance's sshd needs its sftp subsystem (`Subsystem sftp ...`)") from None


def _pump(
    channel: paramiko.Channel, stdin: bytes | None, on_line: LineSink | None, timeout: float | None
) -> tuple[bytes, bytes]:
    """Feed stdin and drain stdout/stderr together, so neither side blocks the other.

    Done only at the channel's EOF, not at its exit status: OpenSSH may send the exit status before
    the last data packets, and stopping there loses the end of long outputs.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    pending = memoryview(stdin) if stdin else None
    if pending is None:
        channel.shutdown_write()
    line_buffer = bytearray()
    while True:
        if deadline is not None and time.monotonic() > deadline:
            channel.close()
            raise RemoteError(f"remote command did not finish within {timeout:.0f}s")
        if pending is not None and channel.send_ready():
            try:
                sent = channel.send(pending[:CHUNK])
            except OSError:
                if not channel.status_event.is_set():
                    raise  # no exit status: the connection itself broke
                pending = None  # the command ended before reading all its stdin: its output says why
                continue
            pending = pending[sent:]
            if not pending:
                channel.shutdown_write()
                pending = None
        progressed = False
        while channel.recv_ready():
            data = channel.recv(CHUNK)
            out += data
            progressed = True
            if on_line is not None:
                line_buffer += data
                *lines, rest = line_buffer.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
                line_buffer = bytearray(rest)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(CHUNK)
            progressed = True
        drained = not channel.recv_ready() and not channel.recv_stderr_ready()
        if drained and (channel.eof_received or channel.closed) and channel.exit_status_ready():
            break
        if not progressed:
            select.select([channel], [], [], 0.05 if pending is None else 0.002)
    if on_line is not None and line_buffer:
        on_line(line_buffer.decode(errors="replace"))
    return bytes(out), bytes(err)
