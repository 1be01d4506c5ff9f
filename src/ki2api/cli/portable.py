"""`ki2api portable [--dir DIR] [--undo] [--dry-run]`: the Kiro login travels with the folder.

The original Ki2API's `kiro.bat`, for Linux, macOS and Windows: the folders that hold the Kiro
login (`~/.aws/sso/cache`, where the IDE writes `kiro-auth-token.json`, and the IDE's own
`~/.kiro`) move into `./data` and are linked back, so the IDE and Ki2API share one login that
lives in the project folder (`./data/.aws/sso/cache` is also where the gateway looks for a
token first: kiro/login/discovery.py). `--undo` moves them back. The plan is a pure function of
what is found at each place; the moves are `folder_swap`'s (copy → verify → swap).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ki2api.cli.folder_swap import SwapError, link_target, move_and_link, relink, restore_from
from ki2api.cli.ide_process import kiro_ide_running
from ki2api.settings import Settings

__all__ = [
    "LOGIN_FOLDERS",
    "At",
    "Plan",
    "add_portable_parser",
    "decide",
    "observe",
    "plan",
    "run_portable",
]

# The folders that hold the Kiro login, relative to the home directory. Only the SSO cache of
# ~/.aws moves: the rest of it (config, credentials) belongs to other AWS tools.
LOGIN_FOLDERS = (Path(".aws") / "sso" / "cache", Path(".kiro"))


class At(Enum):
    """What is found at one place."""

    MISSING = "missing"
    FOLDER = "a folder"
    LINK_TO_DATA = "a link to the data folder"
    LINK_DANGLING = "a link to a folder that is gone"
    LINK_ELSEWHERE = "a link to another folder"
    OTHER = "a file"


@dataclass(frozen=True)
class Step:
    action: str  # "move" | "link" | "restore" | "skip" | "refuse"
    home: Path
    data: Path
    why: str

    def describe(self) -> str:
        return {
            "move": f"move {self.home} to {self.data} and link it back",
            "link": f"link {self.home} to {self.data}",
            "restore": f"move {self.data} back to {self.home}",
            "skip": f"leave {self.home} as it is",
            "refuse": f"refuse: {self.home}",
        }[self.action] + f" ({self.why})"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    @property
    def refusals(self) -> list[Step]:
        return [s for s in self.steps if s.action == "refuse"]


# (undo?, home, data) -> (action, why). What is not in the table is refused.
_TABLE: dict[tuple[bool, At, At], tuple[str, str]] = {
    (False, At.FOLDER, At.MISSING): ("move", "the login folder"),
    (False, At.MISSING, At.FOLDER): ("link", "the data folder came with the project"),
    (False, At.LINK_DANGLING, At.FOLDER): ("link", "the project folder moved"),
    (False, At.LINK_TO_DATA, At.FOLDER): ("skip", "portable already"),
    (False, At.MISSING, At.MISSING): ("skip", "nothing there"),
    (False, At.LINK_DANGLING, At.MISSING): ("skip", "nothing there"),
    (True, At.LINK_TO_DATA, At.FOLDER): ("restore", "portable now"),
    (True, At.LINK_DANGLING, At.FOLDER): ("restore", "the project folder moved"),
    (True, At.MISSING, At.FOLDER): ("restore", "no folder in the home directory"),
    (True, At.FOLDER, At.MISSING): ("skip", "not portable"),
    (True, At.MISSING, At.MISSING): ("skip", "nothing there"),
    (True, At.LINK_DANGLING, At.MISSING): ("skip", "nothing there"),
}


def decide(undo: bool, home: At, data: At) -> tuple[str, str]:
    """The action for one folder, from what is at its two places."""
    found = _TABLE.get((undo, home, data))
    if found is not None:
        return found
    return ("refuse", f"the home directory has {home.value}, the data folder {data.value}")


def observe(path: Path, data: Path | None = None) -> At:
    """What is at `path` (for the home side, `data` tells a link to it from another link)."""
    target = link_target(path)
    if target is not None:
        if not target.exists():
            return At.LINK_DANGLING
        if data is not None and data.exists() and target.resolve() == data.resolve():
            return At.LINK_TO_DATA
        return At.LINK_ELSEWHERE
    if not path.exists():
        return At.MISSING
    return At.FOLDER if path.is_dir() else At.OTHER


def plan(home_dir: Path, data_dir: Path, *, undo: bool) -> Plan:
    steps = []
    for rel in LOGIN_FOLDERS:
        home, data = home_dir / rel, data_dir / rel
        action, why = decide(undo, observe(home, data), observe(data))
        steps.append(Step(action, home, data, why))
    return Plan(tuple(steps))


def add_portable_parser(sub: Any) -> None:
    p = sub.add_parser(
        "portable",
        help="move the Kiro login folders into ./data and link them back (--undo: move back)",
    )
    p.add_argument("--dir", type=Path, help="the data folder (default: ./data)")
    p.add_argument("--undo", action="store_true", help="move the folders back home")
    p.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    p.add_argument(
        "--ide-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a process name that means the Kiro IDE is running (repeatable; default: "
        "kiro, Kiro, Kiro Helper …, Kiro.exe)",
    )


def _carry_out(step: Step) -> str | None:
    if step.action == "move":
        return move_and_link(step.home, step.data)
    if step.action == "link":
        relink(step.home, step.data)
    elif step.action == "restore":
        return restore_from(step.data, step.home)
    return None


def run_portable(settings: Settings, args: argparse.Namespace) -> int:
    data_dir = args.dir if args.dir is not None else Path("data")
    data_dir = data_dir if data_dir.is_absolute() else settings.work_dir / data_dir
    todo = plan(settings.home_dir, data_dir, undo=args.undo)
    for step in todo.steps:
        print(("would " if args.dry_run else "") + step.describe())
    if todo.refusals:
        print(
            "ki2api portable: nothing was changed. Move or merge the folders named above by hand."
        )
        return 1
    if all(s.action == "skip" for s in todo.steps):
        return 0
    running = kiro_ide_running(args.ide_name)
    if running:
        names = ", ".join(sorted(set(running)))
        print(
            f"ki2api portable: the Kiro IDE is running ({names}): close it first. "
            "Nothing was changed."
        )
        return 1
    if running is None:
        print(
            "ki2api portable: warning: could not list the running programs; "
            "make sure the Kiro IDE is closed."
        )
    return 0 if args.dry_run else _carry_out_all(todo, undo=args.undo)


def _carry_out_all(todo: Plan, *, undo: bool) -> int:
    for step in todo.steps:
        try:
            warning = _carry_out(step)
        except SwapError as exc:
            print(
                f"ki2api portable: {exc}. The steps listed before this one are done; run "
                "the same command again to carry on."
            )
            return 1
        if warning:
            print(f"ki2api portable: warning: {warning}")
    if undo:
        print("done: the login folders are back in the home directory.")
    else:
        print("done: the Kiro IDE and Ki2API now share the login kept in the data folder.")
    return 0
