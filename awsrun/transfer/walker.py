"""The project walker: ignore rules applied, symlinks never followed. It runs here (awsrun.transfer.scan) and on
the target, where this file's source text is sent as part of the helper program: standard library
only, Python 3.6+, no names from outside a function but its arguments, nothing at import time.
"""


def is_ignored(tiers, path, is_dir):
    """Highest tier first, last rule of a tier first: the first rule that matches decides."""
    name = path.rsplit("/", 1)[-1]
    for rules in tiers:
        for base, regex, negate, dir_only, basename_only in reversed(rules):
            if dir_only and not is_dir:
                continue
            if base:
                if not path.startswith(base + "/"):
                    continue
                sub = path[len(base) + 1:]
            else:
                sub = path
            if regex.fullmatch(name if basename_only else sub):
                return not negate
    return False


def walk_tree(root, tiers, on_dir=None, on_other=None, stale_after=None):
    """{relative path: entry} under root, never following a symlink. Entries: ["f", size, mtime_ns,
    mode] for files, ["l", target] for symlinks. Ignored paths are skipped (directories pruned);
    `on_dir(abs, rel)` runs before a directory is listed (to read its ignore files), `on_other(rel,
    mode)` gets what is neither file, directory nor symlink. Temp files of an interrupted transfer are
    never listed, and deleted when older than `stale_after` seconds."""
    import os as _os
    import stat as _stat
    import time as _time

    entries, stack = {}, [""]
    while stack:
        rel = stack.pop()
        here = _os.path.join(root, rel) if rel else root
        if on_dir is not None:
            on_dir(here, rel)
        try:
            listing = list(_os.scandir(here))
        except OSError:
            continue
        for entry in listing:
            path = rel + "/" + entry.name if rel else entry.name
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            mode = info.st_mode
            if entry.name.startswith(".awsrun-tmp-"):
                if stale_after is not None and _time.time() - info.st_mtime > stale_after:
                    try:
                        _os.unlink(entry.path)
                    except OSError:
                        pass
                continue
            if _stat.S_ISDIR(mode):
                if not is_ignored(tiers, path, True):
                    stack.append(path)
            elif is_ignored(tiers, path, False):
                continue
            elif _stat.S_ISREG(mode):
                entries[path] = ["f", info.st_size, info.st_mtime_ns, _stat.S_IMODE(mode) & 0o777]
            elif _stat.S_ISLNK(mode):
                entries[path] = ["l", _os.readlink(entry.path)]
            elif on_other is not None:
                on_other(path, mode)
    return entries
