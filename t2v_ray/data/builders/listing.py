"""List the files of an image folder tree, local or on S3, without being fooled by symbolic links.

Directory links are not followed by default: real trees use them for "see also" entries, which put one image in
several classes, and a link to an ancestor is a loop (the kernel stops it only 40 levels down). With
``follow_symlinks=True`` they are followed, except those whose target is the folder itself or one of its
ancestors (by device and inode), which would loop. Links to files are followed; dangling links are reported.
S3 has no links: its listing is used as is.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from t2v_ray.data import storage


@dataclass
class TreeListing:
    """Files below a root (relative posix paths, sorted) and the entries left out, as ``"path: reason"``."""

    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def list_tree(root_uri: str, follow_symlinks: bool = False) -> TreeListing:
    """Every file below ``root_uri``; hidden entries (names starting with ``.``) are left out silently."""
    if not storage.is_local(root_uri):
        files = [rel for rel, _ in storage.list_files(root_uri)]
        return TreeListing([f for f in files if not any(p.startswith(".") for p in f.split("/"))])
    _, root = storage.open_fs(root_uri)
    out = TreeListing()
    try:
        top = os.stat(root)
    except OSError:
        return out  # a missing root lists nothing, as storage.list_files does
    _walk(root, "", (_key(top),), follow_symlinks, out)
    out.files.sort()
    return out


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _walk(
    path: str, rel: str, ancestors: tuple[tuple[int, int], ...], follow: bool, out: TreeListing
) -> None:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as e:
        out.skipped.append(f"{rel or '.'}: unreadable folder ({e.strerror or e})")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        sub = f"{rel}/{entry.name}" if rel else entry.name
        if not entry.is_symlink():
            if entry.is_dir(follow_symlinks=False):
                _walk(entry.path, sub, (*ancestors, _key(entry.stat(follow_symlinks=False))), follow, out)
            elif entry.is_file(follow_symlinks=False):
                out.files.append(sub)
            else:
                out.skipped.append(f"{sub}: not a regular file")
            continue
        target = os.readlink(entry.path)
        try:
            st = os.stat(entry.path)  # follows the link
        except OSError as e:
            why = "symlink loop" if e.errno == errno.ELOOP else "dangling symlink"
            out.skipped.append(f"{sub}: {why} -> {target}")
            continue
        if stat.S_ISREG(st.st_mode):
            out.files.append(sub)
        elif not stat.S_ISDIR(st.st_mode):
            out.skipped.append(f"{sub}: not a regular file (symlink -> {target})")
        elif not follow:
            out.skipped.append(f"{sub}: directory symlink -> {target} not followed (follow_symlinks is off)")
        elif _key(st) in ancestors:
            out.skipped.append(f"{sub}: directory symlink -> {target} loops back to an ancestor folder")
        else:
            _walk(entry.path, sub, (*ancestors, _key(st)), follow, out)
