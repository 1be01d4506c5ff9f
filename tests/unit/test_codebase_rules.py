"""Rules a newcomer can rely on, checked on the source itself (AST and file system, no imports):
modules under 500 lines, functions under 60, one module per name in ki2api, one module reading
the environment, and the import contracts (`.importlinter`) covering every package."""

from __future__ import annotations

import ast
import configparser
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = SRC / "ki2api"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
# The one pair of packages that mirror each other on purpose: a name in both is the same job
# done for the other API (wire.py, to_core.py, from_core.py, ...).
MIRRORS = {("frontends", "anthropic"), ("frontends", "openai")}


def _modules(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def _where(path: Path, line: int | None = None) -> str:
    rel = path.relative_to(ROOT).as_posix()
    return rel if line is None else f"{rel}:{line}"


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_the_rules_see_the_source() -> None:
    assert len(_modules(PACKAGE)) > 50 and (SRC / "kiro_emulator").is_dir()


def test_no_module_is_over_500_lines() -> None:
    offenders = []
    for path in _modules(SRC):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{_where(path)} has {lines} lines")
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_no_function_is_over_60_lines() -> None:
    offenders = []
    for path in _modules(SRC):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for fn in _functions(tree):
            assert fn.end_lineno is not None
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                offenders.append(f"{_where(path, fn.lineno)} {fn.name}() has {lines} lines")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def _shared_names(paths: list[Path]) -> dict[str, list[Path]]:
    by_name: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        if path.name != "__init__.py":
            by_name[path.name].append(path)
    shared = {}
    for name, found in by_name.items():
        packages = {path.parent.relative_to(PACKAGE).parts for path in found}
        if len(found) > 1 and packages != MIRRORS:
            shared[name] = found
    return shared


def test_no_two_modules_of_ki2api_share_a_name() -> None:
    shared = _shared_names(_modules(PACKAGE))
    lines = [f"{name}: {', '.join(_where(p) for p in found)}" for name, found in shared.items()]
    assert not shared, "module names in two packages (say what each holds):\n" + "\n".join(lines)


def test_the_name_rule_can_fail() -> None:
    mirror = [PACKAGE / "frontends/openai/wire.py", PACKAGE / "frontends/anthropic/wire.py"]
    twice = [PACKAGE / "kiro/codec.py", PACKAGE / "kiro/stream/codec.py"]
    assert _shared_names(mirror) == {}
    assert list(_shared_names(mirror + twice)) == ["codec.py"]
    assert list(_shared_names([*mirror, PACKAGE / "server/wire.py"])) == ["wire.py"]


def _reads_environment(tree: ast.AST) -> list[int]:
    """Lines reading `os.environ` / `os.getenv` (assigning an item of os.environ is allowed)."""
    written = {
        id(target.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Subscript)
    }
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and node.attr in {"environ", "getenv", "environb", "getenvb"}
        and id(node) not in written
    )


def test_only_settings_reads_the_environment() -> None:
    offenders = []
    for path in _modules(PACKAGE):
        if path == PACKAGE / "settings.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [_where(path, line) for line in _reads_environment(tree)]
    assert not offenders, "the environment is read by settings.py only:\n" + "\n".join(offenders)


def test_the_environment_rule_can_fail() -> None:
    tree = ast.parse("import os\nos.environ['HOST'] = 'x'\na = os.environ.get('A')\nos.getenv('B')")
    assert _reads_environment(tree) == [3, 4]


def test_core_contract_forbids_every_other_package() -> None:
    """`core imports nothing of ours but core`: its forbidden list names every other top-level
    module of ki2api, so a new package is covered the day it is added."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter", encoding="utf-8")
    forbidden = set(config["importlinter:contract:core-alone"]["forbidden_modules"].split())
    top_level = {
        f"ki2api.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert top_level - {"ki2api.core"} <= forbidden, sorted(top_level - forbidden)
