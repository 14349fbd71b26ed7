"""Runs on the target (awsrun.sync.apply_command, or after check_manifest.py's text): reads the push
payload (awsrun.sync.payload) on stdin and applies it under the directory argv[1]: first the deletions,
then each file written whole under a temporary name and renamed into place with its mode and mtime_ns.
Exit 28 with a message naming the disk when it is full, 1 when the stream ends before its end mark.
Lines starting "awsrun-warning: " on stderr are reported to the user. Standard library only; nothing
runs on import.
"""
import json
import os
import stat
import sys
import zlib


def warn(text):
    sys.stderr.write("awsrun-warning: " + text + "\n")


def parts_of(name):
    """The parts of a plain relative path, or None for anything else."""
    parts = name.split("/")
    if name.startswith("/") or "\0" in name or any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def parent_directory(root, parts, create):
    """The directory that holds `parts` under root (made when `create`), or None when something on the
    way is not a directory (a symlink included) or, without `create`, is missing."""
    here = root
    for part in parts[:-1]:
        here = os.path.join(here, part)
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(here)
            continue
        if not stat.S_ISDIR(info.st_mode):
            return None
    return here


def delete_files(root, names):
    """Unlink each name (never a directory), then the directories it leaves empty."""
    for name in names:
        parts = parts_of(name)
        here = parts and parent_directory(root, parts, False)
        if not here:
            continue
        target = os.path.join(here, parts[-1])
        try:
            if stat.S_ISDIR(os.lstat(target).st_mode):
                continue
            os.unlink(target)
        except OSError:
            continue
        while here != root:
            try:
                os.rmdir(here)
            except OSError:
                break
            here = os.path.dirname(here)


def remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def exit_disk_full(root):
    """Exit 28 saying which disk holds root, how big it is and how much is left."""
    mount = os.path.realpath(root)
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    device = "?"
    try:
        for line in open("/proc/mounts"):
            fields = line.split()
            if len(fields) > 2 and fields[1] == mount:
                device = fields[0] + " (" + fields[2] + ")"
    except OSError:
        pass
    info = os.statvfs(root)

    def size(n):
        return "%.1f MB" % (n / 1e6) if n < 1e9 else "%.1f GB" % (n / 1e9)

    sys.stderr.write("no space left on the instance's disk %s mounted on %s, which holds %s: %s free of %s "
                     "(free space there, e.g. `awsrun ssh -- df -h`, or leave big files out with .awsrunignore)\n"
                     % (device, mount, root, size(info.f_bavail * info.f_frsize), size(info.f_blocks * info.f_frsize)))
    sys.exit(28)


class Stream:
    """The payload's records (see awsrun.sync.payload), zlib'd unless its first byte is "{"."""

    def __init__(self, raw):
        self.raw, self.pending, self.z = raw, bytearray(raw.read(1)), None
        if self.pending[:1] != b"{":
            self.z = zlib.decompressobj()
            self.pending = bytearray(self.z.decompress(bytes(self.pending)))

    def more(self):
        """Decompressed 4 MB at a time at most, whatever the file."""
        if self.z is not None and self.z.unconsumed_tail:
            self.pending += self.z.decompress(self.z.unconsumed_tail, 1 << 22)
            return
        chunk = self.raw.read(1 << 16)
        if not chunk:
            sys.stderr.write("the transfer ended early: nothing more was written\n")
            sys.exit(1)
        self.pending += self.z.decompress(chunk, 1 << 22) if self.z is not None else chunk

    def header(self):
        while b"\n" not in self.pending:
            self.more()
        end = self.pending.index(b"\n")
        line = bytes(self.pending[:end])
        del self.pending[:end + 1]
        return json.loads(line.decode())

    def copy(self, size, handle):
        while size:
            if not self.pending:
                self.more()
            part = self.pending[:size]
            handle.write(part)
            del self.pending[:len(part)]
            size -= len(part)


def apply_payload():
    root = os.path.expanduser(sys.argv[1])
    os.makedirs(root, exist_ok=True)
    count, temp = 0, None
    stream = Stream(sys.stdin.buffer)
    try:
        delete_files(root, stream.header()["delete"])
        while True:
            member = stream.header()
            if member.get("end"):
                break
            name, size = member["name"], member.get("size", 0)
            parts = parts_of(name)
            here = parts and parent_directory(root, parts, True)
            target = here and os.path.join(here, parts[-1])
            problem = ("not a plain path below the project directory" if not here else
                       "a directory of that name is in the way on the instance"
                       if os.path.isdir(target) and not os.path.islink(target) else None)
            if problem:
                warn("skipped %r: %s" % (name, problem))
                with open(os.devnull, "wb") as nowhere:
                    stream.copy(size, nowhere)
                continue
            count += 1
            temp = os.path.join(here, ".awsrun-tmp-%d-%d" % (os.getpid(), count))
            if "link" in member:
                os.symlink(member["link"], temp)
            else:
                with open(temp, "wb") as handle:
                    stream.copy(size, handle)
                os.chmod(temp, member["mode"] & 0o777)
                os.utime(temp, ns=(member["mtime_ns"], member["mtime_ns"]))
            os.replace(temp, target)
            temp = None
    except OSError as exc:
        if exc.errno not in (28, 122):  # ENOSPC, EDQUOT
            raise
        if temp is not None:  # first, so that the free space reported counts it
            remove(temp)
            temp = None
        exit_disk_full(root)
    finally:
        if temp is not None:
            remove(temp)


if __name__ == "__main__":
    apply_payload()
