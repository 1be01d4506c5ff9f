"""Moving a folder and linking it back without ever losing a file (`ki2api portable`).

Every move is copy → verify → swap: the folder is copied next to its new place under a
temporary name, the copy is compared with the original file by file (names, kinds, sizes,
bytes, link targets), renamed into place (same file system: atomic), and only then is the
original renamed aside, replaced by a link, and deleted. A failure at any step undoes the steps
before it, so at every moment each file exists whole in at least one of the two places.

Links are symbolic links on Linux and macOS and directory junctions on Windows (they need
neither administrator rights nor developer mode; a symbolic link is the fallback).
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import sys
from pathlib import Path

__all__ = [
    "PARTIAL_SUFFIX",
    "SwapError",
    "link_target",
    "make_link",
    "move_and_link",
    "relink",
    "remove_link",
    "restore_from",
    "trees_match",
]

PARTIAL_SUFFIX = ".ki2api-partial"  # a copy in progress (safe to delete: the original exists)
_OLD_SUFFIX = ".ki2api-old"  # the original, renamed aside until its link is in place


class SwapError(Exception):
    """A step failed and was rolled back; the message says what was left where."""


def link_target(path: Path) -> Path | None:
    """Where `path` points when it is a symbolic link or a junction, else None."""
    try:
        raw = os.readlink(path)
    except (OSError, ValueError):
        return None
    if raw.startswith("\\\\?\\"):  # a Windows junction's target has the long-path prefix
        raw = raw[4:]
    target = Path(raw)
    return target if target.is_absolute() else path.parent / target


def make_link(link: Path, target: Path) -> None:
    """`link` → `target` (a directory): a junction on Windows, else a symbolic link."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":
        import _winapi

        try:
            _winapi.CreateJunction(str(target.resolve()), str(link))
            return
        except OSError:
            pass  # another volume or a network share: a symbolic link may still work
    os.symlink(target.resolve(), link, target_is_directory=True)


def remove_link(link: Path) -> None:
    """Remove a symbolic link or junction, never what it points to."""
    if link_target(link) is None:
        raise SwapError(f"{link} is not a link; not removing it")
    try:
        os.unlink(link)
    except (IsADirectoryError, PermissionError):
        os.rmdir(link)  # a junction or directory symlink on Windows


def trees_match(a: Path, b: Path) -> str | None:
    """None when the two folders hold the same entries with the same bytes; else the first
    difference found."""
    entries_a, entries_b = _entries(a), _entries(b)
    if entries_a.keys() != entries_b.keys():
        only = sorted(entries_a.keys() ^ entries_b.keys())
        return f"different entries: {only[:3]}"
    for rel, kind in entries_a.items():
        if entries_b[rel] != kind:
            return f"{rel}: a {kind} in one and a {entries_b[rel]} in the other"
        if kind == "file" and not filecmp.cmp(a / rel, b / rel, shallow=False):
            return f"{rel}: the copy differs"
        if kind == "link" and os.readlink(a / rel) != os.readlink(b / rel):
            return f"{rel}: the link points elsewhere"
    return None


def _entries(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "link"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = "file"
    return found


def _verified_copy(source: Path, dest: Path) -> None:
    """Copy `source` to `dest` (which must not exist) through a temporary name, verified."""
    if dest.exists() or dest.is_symlink():
        raise SwapError(f"{dest} exists already")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    _discard(partial)  # left by an interrupted run; its original still exists
    try:
        shutil.copytree(source, partial, symlinks=True)
        problem = trees_match(source, partial)
        if problem is not None:
            raise SwapError(f"the copy of {source} does not match it ({problem})")
        os.rename(partial, dest)
    except BaseException:
        _discard(partial)
        raise


def _discard(path: Path) -> None:
    if path.is_symlink():
        os.unlink(path)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def move_and_link(home: Path, data: Path) -> str | None:
    """Move the folder `home` to `data` and leave a link at `home`. Returns a warning when the
    original could not be deleted afterwards (every file is in `data` then too)."""
    try:
        _verified_copy(home, data)
    except OSError as exc:
        raise SwapError(f"could not copy {home} to {data} ({exc}); nothing was changed") from exc
    aside = home.with_name(home.name + _OLD_SUFFIX)
    try:
        _refuse_if_present(aside)
        os.rename(home, aside)
    except BaseException as exc:
        _discard(data)  # a verified copy; the original is still at `home`
        raise SwapError(f"could not move {home} aside ({exc}); nothing was changed") from exc
    try:
        make_link(home, data)
    except BaseException as exc:
        os.rename(aside, home)
        _discard(data)
        raise SwapError(f"could not link {home} to {data} ({exc}); nothing was changed") from exc
    shutil.rmtree(aside, ignore_errors=True)
    if aside.exists():
        return f"the old copy {aside} could not be deleted; delete it by hand"
    return None


def _refuse_if_present(aside: Path) -> None:
    if aside.exists() or aside.is_symlink():
        raise SwapError(f"{aside} exists (left by an earlier run?): look inside, then delete it")


def restore_from(data: Path, home: Path) -> str | None:
    """Move the folder `data` back to `home`, replacing the link there (if any)."""
    old_link = link_target(home)
    staged = home.with_name(home.name + ".ki2api-restore")
    try:
        _refuse_if_present(staged)
        _verified_copy(data, staged)
    except OSError as exc:
        raise SwapError(f"could not copy {data} to {staged} ({exc}); nothing was changed") from exc
    try:
        if old_link is not None:
            remove_link(home)
        os.rename(staged, home)
    except BaseException as exc:
        if old_link is not None and link_target(home) is None and not home.exists():
            with contextlib.suppress(OSError):
                make_link(home, old_link)
        _discard(staged)
        raise SwapError(
            f"could not put {data} back at {home} ({exc}); nothing was changed"
        ) from exc
    shutil.rmtree(data, ignore_errors=True)
    if data.exists():
        return f"{data} could not be deleted after the move back; delete it by hand"
    return None


def relink(home: Path, data: Path) -> None:
    """Point `home` (missing, or a link whose target is gone) at `data`."""
    old = link_target(home)
    if old is not None:
        remove_link(home)
    try:
        make_link(home, data)
    except OSError as exc:
        if old is not None:
            with contextlib.suppress(OSError):
                os.symlink(old, home, target_is_directory=True)
        raise SwapError(f"could not link {home} to {data} ({exc})") from exc
