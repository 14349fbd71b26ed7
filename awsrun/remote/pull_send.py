"""Runs on the target after walker.py's text (awsrun.sync.pull_command): reads the local manifest
({path: [size, mtime_ns]}) as JSON on stdin and writes to stdout, base64, a gzip'd tar of everything
under argv[1] that differs from it, each regular file with its exact mtime_ns in a PAX header. Exit 3:
no such directory. Standard library only; nothing runs on import (tarfile is loaded only when run).
"""
import json
import os
import sys


def send_changed():
    import base64
    import io
    import tarfile

    root = os.path.expanduser(sys.argv[1])
    if not os.path.isdir(root):
        sys.stderr.write("no directory %s\n" % root)
        sys.exit(3)
    have = json.load(sys.stdin)
    buffer = io.BytesIO()
    archive = tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1, format=tarfile.PAX_FORMAT)
    others = []
    entries = walk_tree(root, [], on_other=lambda rel, mode: others.append(rel))  # noqa: F821 (walker.py's)
    for rel in sorted(list(entries) + others):
        path = os.path.join(root, rel)
        entry = entries.get(rel)
        if entry and entry[0] == "f" and have.get(rel) == [entry[1], entry[2]]:
            continue
        try:
            info = archive.gettarinfo(path, arcname=rel)
        except OSError:
            continue
        if info is None:
            continue
        if info.isreg():
            info.pax_headers = {"AWSRUN.mtime_ns": str(os.lstat(path).st_mtime_ns)}
            try:
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)
            except OSError:
                continue
        else:
            archive.addfile(info)
    archive.close()
    sys.stdout.write(base64.b64encode(buffer.getvalue()).decode())


if __name__ == "__main__":
    send_changed()
