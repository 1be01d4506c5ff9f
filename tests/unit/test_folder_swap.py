"""The moves of `ki2api portable` never lose a file: each file-system call in turn is made to
fail, and afterwards every file is still there, whole, either where it was (rolled back) or in
the data folder behind a link (done)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ki2api.cli import folder_swap
from ki2api.cli.folder_swap import (
    PARTIAL_SUFFIX,
    SwapError,
    link_target,
    make_link,
    move_and_link,
    restore_from,
    trees_match,
)

# The calls that change the file system, as folder_swap and shutil make them.
_MUTATING = [
    (os, "rename"),
    (os, "symlink"),
    (os, "unlink"),
    (os, "rmdir"),
    (os, "mkdir"),
    (shutil, "copyfile"),
    (shutil, "copystat"),
]


def _fill(root: Path) -> dict[str, bytes]:
    files = {
        "kiro-auth-token.json": b'{"refreshToken": "r"}',
        "0123abcd.json": b'{"clientId": "c"}',
        "deep/er/blob.bin": bytes(range(256)) * 40,
        "empty": b"",
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    os.chmod(root / "kiro-auth-token.json", 0o600)
    (root / "emptydir").mkdir()
    os.symlink("kiro-auth-token.json", root / "alias.json")
    return files


def _contents(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@contextmanager
def _failing_call(monkeypatch: pytest.MonkeyPatch, nth: int) -> Iterator[list[str]]:
    """Make the `nth` mutating call (counted from 1) raise OSError; yields the calls made."""
    calls: list[str] = []

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            if len(calls) == nth:
                raise OSError(f"injected failure of {name} (call {nth})")
            return real(*args, **kwargs)

        return call

    with monkeypatch.context() as m:
        for module, name in _MUTATING:
            m.setattr(module, name, wrap(name, getattr(module, name)))
        yield calls


def _calls_needed(run: Callable[[], object], monkeypatch: pytest.MonkeyPatch) -> int:
    with _failing_call(monkeypatch, 0) as calls:
        run()
    return len(calls)


def _layout(tmp_path: Path, *, portable: bool) -> tuple[Path, Path, dict[str, bytes]]:
    home = tmp_path / "home" / ".aws" / "sso" / "cache"
    data = tmp_path / "project" / "data" / ".aws" / "sso" / "cache"
    home.mkdir(parents=True)
    files = _fill(home)
    if portable:
        move_and_link(home, data)
    return home, data, files


def _assert_moved(home: Path, data: Path, files: dict[str, bytes]) -> None:
    assert link_target(home) is not None and home.resolve() == data.resolve()
    assert _contents(data) == files
    assert (data / "alias.json").is_symlink()
    assert _contents(home) == files  # through the link


def _assert_in_place(home: Path, data: Path, files: dict[str, bytes]) -> None:
    assert link_target(home) is None and home.is_dir()
    assert _contents(home) == files
    assert not data.exists()


def _no_leftovers(*dirs: Path) -> None:
    for d in dirs:
        names = [p.name for p in d.iterdir()] if d.exists() else []
        assert not [n for n in names if n.endswith(PARTIAL_SUFFIX)], names


def test_move_and_undo_keep_every_file_and_its_mode(tmp_path: Path) -> None:
    home, data, files = _layout(tmp_path, portable=False)
    assert move_and_link(home, data) is None
    _assert_moved(home, data, files)
    assert (data / "kiro-auth-token.json").stat().st_mode & 0o777 == 0o600
    (home / "written-through-the-link.json").write_text("{}")  # the IDE writing a new token
    files["written-through-the-link.json"] = b"{}"
    assert restore_from(data, home) is None
    _assert_in_place(home, data, files)
    _no_leftovers(home.parent, data.parent)


def test_a_failure_at_any_step_of_the_move_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tmp_path / "count"
    home, data, _ = _layout(first, portable=False)
    steps = _calls_needed(lambda: move_and_link(home, data), monkeypatch)
    assert steps > 10  # copies, the checks' renames, the link, the old folder's removal
    for nth in range(1, steps + 1):
        home, data, files = _layout(tmp_path / f"fail-{nth}", portable=False)
        with _failing_call(monkeypatch, nth):
            try:
                warning = move_and_link(home, data)
            except SwapError:
                warning = "failed"
        if warning == "failed":
            _assert_in_place(home, data, files)  # rolled back
        else:
            _assert_moved(home, data, files)  # a failure while deleting the old copy only
        _no_leftovers(home.parent, data.parent)


def test_a_failure_at_any_step_of_the_undo_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, data, _ = _layout(tmp_path / "count", portable=True)
    steps = _calls_needed(lambda: restore_from(data, home), monkeypatch)
    for nth in range(1, steps + 1):
        home, data, files = _layout(tmp_path / f"fail-{nth}", portable=True)
        with _failing_call(monkeypatch, nth):
            try:
                warning = restore_from(data, home)
            except SwapError:
                warning = "failed"
        if warning == "failed":
            _assert_moved(home, data, files)  # rolled back: still portable
        else:
            assert link_target(home) is None and _contents(home) == files
            if data.exists():  # ./data could not be deleted (wholly): said; all is at home
                assert warning and "delete it by hand" in warning
        _no_leftovers(home.parent, data.parent)


def test_an_existing_target_is_never_overwritten(tmp_path: Path) -> None:
    home, data, files = _layout(tmp_path, portable=False)
    data.mkdir(parents=True)
    (data / "theirs.json").write_text("keep me")
    with pytest.raises(SwapError, match="exists"):
        move_and_link(home, data)
    _assert_in_place_with_target(home, data, files)


def _assert_in_place_with_target(home: Path, data: Path, files: dict[str, bytes]) -> None:
    assert link_target(home) is None and _contents(home) == files
    assert _contents(data) == {"theirs.json": b"keep me"}


def test_a_copy_that_does_not_match_is_refused_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, data, files = _layout(tmp_path, portable=False)
    real_copy = shutil.copyfile

    def corrupting_copy(src: Any, dst: Any, **kwargs: Any) -> Any:
        out = real_copy(src, dst, **kwargs)
        if os.fspath(src).endswith("blob.bin"):
            Path(dst).write_bytes(b"truncated")
        return out

    monkeypatch.setattr(shutil, "copyfile", corrupting_copy)
    with pytest.raises(SwapError, match="does not match"):
        move_and_link(home, data)
    _assert_in_place(home, data, files)
    _no_leftovers(data.parent)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (lambda b: (b / "empty").write_bytes(b"x"), "empty"),
        (lambda b: (b / "deep/er/blob.bin").write_bytes(b"\0" * 10240), "blob.bin"),
        (lambda b: (b / "extra").write_text("x"), "extra"),
        (lambda b: (b / "0123abcd.json").unlink(), "0123abcd.json"),
        (lambda b: ((b / "alias.json").unlink(), os.symlink("empty", b / "alias.json")), "alias"),
        (lambda b: ((b / "emptydir").rmdir(), (b / "emptydir").write_text("")), "emptydir"),
        (lambda b: None, None),
    ],
)
def test_trees_match(tmp_path: Path, change: Callable[[Path], object], found: str | None) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    _fill(a)
    shutil.copytree(a, b, symlinks=True)
    change(b)
    problem = trees_match(a, b)
    assert (problem is None) if found is None else (found in (problem or ""))


def test_make_link_points_at_the_folder_and_link_target_reads_it(tmp_path: Path) -> None:
    target = tmp_path / "data" / "x"
    target.mkdir(parents=True)
    make_link(tmp_path / "home" / "x", target)  # makes the missing parent too
    assert link_target(tmp_path / "home" / "x") == target.resolve()
    assert link_target(target) is None
    assert folder_swap.link_target(tmp_path / "nothing") is None
