"""`ki2api portable`'s pure parts: the plan table, what is at a place, the IDE's process names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ki2api.cli.ide_process import ide_processes
from ki2api.cli.portable import LOGIN_FOLDERS, At, decide, observe, plan

F, M, L, D, E, X = (
    At.FOLDER,
    At.MISSING,
    At.LINK_TO_DATA,
    At.LINK_DANGLING,
    At.LINK_ELSEWHERE,
    At.OTHER,
)


@pytest.mark.parametrize(
    ("undo", "home", "data", "action"),
    [
        # making it portable
        (False, F, M, "move"),
        (False, M, F, "link"),  # the project folder came to a new machine
        (False, D, F, "link"),  # the project folder moved on this machine
        (False, L, F, "skip"),
        (False, M, M, "skip"),
        (False, D, M, "skip"),
        (False, F, F, "refuse"),  # a target exists: never merge
        (False, E, F, "refuse"),
        (False, E, M, "refuse"),
        (False, X, M, "refuse"),
        (False, F, X, "refuse"),
        (False, F, E, "refuse"),
        (False, L, M, "refuse"),
        # undoing it
        (True, L, F, "restore"),
        (True, D, F, "restore"),
        (True, M, F, "restore"),
        (True, F, M, "skip"),
        (True, M, M, "skip"),
        (True, D, M, "skip"),
        (True, F, F, "refuse"),
        (True, E, F, "refuse"),
        (True, X, F, "refuse"),
        (True, L, X, "refuse"),
    ],
)
def test_decide(undo: bool, home: At, data: At, action: str) -> None:
    got, why = decide(undo, home, data)
    assert got == action
    assert why


def test_observe_tells_every_kind_of_place(tmp_path: Path) -> None:
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    (tmp_path / "file").write_text("x")
    cases = {"to-data": data, "elsewhere": other, "dangling": tmp_path / "gone"}
    for name, target in cases.items():
        os.symlink(target, tmp_path / name, target_is_directory=True)
    assert observe(tmp_path / "nothing", data) is At.MISSING
    assert observe(data) is At.FOLDER
    assert observe(tmp_path / "file") is At.OTHER
    assert observe(tmp_path / "to-data", data) is At.LINK_TO_DATA
    assert observe(tmp_path / "elsewhere", data) is At.LINK_ELSEWHERE
    assert observe(tmp_path / "dangling", data) is At.LINK_DANGLING


def test_plan_covers_the_login_folders_with_the_same_relative_places(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    (home / ".kiro").mkdir(parents=True)
    steps = plan(home, data, undo=False).steps
    assert [(s.home, s.data) for s in steps] == [(home / r, data / r) for r in LOGIN_FOLDERS]
    assert [s.action for s in steps] == ["skip", "move"]  # no ~/.aws/sso/cache; ~/.kiro moves
    assert Path(".aws/sso/cache") in LOGIN_FOLDERS  # where the IDE writes kiro-auth-token.json


@pytest.mark.parametrize(
    ("names", "found"),
    [
        (["kiro\n", "bash", "python3"], ["kiro"]),  # Linux /proc/*/comm
        (["ki2api", "kiro-cli", "kiro-cli-chat", "kirox"], []),  # not the IDE
        (
            [
                "/Applications/Kiro.app/Contents/MacOS/Kiro",
                "/Applications/Kiro.app/Contents/Frameworks/Kiro Helper (Renderer).app/"
                "Contents/MacOS/Kiro Helper (Renderer)",
                "/usr/sbin/cfprefsd",
            ],
            [
                "/Applications/Kiro.app/Contents/MacOS/Kiro",
                "/Applications/Kiro.app/Contents/Frameworks/Kiro Helper (Renderer).app/"
                "Contents/MacOS/Kiro Helper (Renderer)",
            ],
        ),  # macOS `ps -axo comm=`
        (["Kiro.exe", "explorer.exe", "ki2api.exe"], ["Kiro.exe"]),  # Windows tasklist
        (
            [r"C:\Users\me\AppData\Local\Programs\Kiro\Kiro.exe"],
            [r"C:\Users\me\AppData\Local\Programs\Kiro\Kiro.exe"],
        ),
        ([], []),
    ],
)
def test_ide_processes(names: list[str], found: list[str]) -> None:
    assert ide_processes(names) == found


def test_ide_processes_with_names_given_match_only_those() -> None:
    names = ["kiro", "/opt/Kiro Insiders/Kiro-Insiders", "kt-1234"]
    assert ide_processes(names, ["kiro-insiders"]) == ["/opt/Kiro Insiders/Kiro-Insiders"]
    assert ide_processes(names, ["KT-1234"]) == ["kt-1234"]
