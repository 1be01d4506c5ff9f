"""The map is true to the territory: docs/architecture.md names modules and packages that exist
(and every package), and the section references in code comments point at real sections.

The map is the fenced block that starts with `src/ki2api/`: a tree of `package/` headings, each
followed (indented) by its modules, one per line or several on one line. A bare module name
belongs to the package heading it sits under; a name with a `/` may also be relative to
src/ki2api/, src/ or the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = SRC / "ki2api"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"

SECTION = "\u00a7"  # the section sign, spelled out so this file cites no section itself
MODULE = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*\w+\.py)\b")
DOTTED = re.compile(r"(?<![\w.])ki2api(?:\.\w+)+")
HEADING = re.compile(r"^((?:[\w.-]+/)+)(?:\s|$)")


# --- the map -------------------------------------------------------------------------------------


def _tree(text: str) -> list[str]:
    """The lines of the fenced block whose first line is `src/ki2api/`."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    for block in blocks:
        lines = block.splitlines()
        if lines and lines[0].strip() == "src/ki2api/":
            return lines
    raise AssertionError("docs/architecture.md has no ```-block starting with src/ki2api/")


@dataclass
class Map:
    headings: set[Path]  # the package directories named as `package/`
    modules: list[tuple[str, list[Path]]]  # a module named, and where it may be


def _read_map(lines: list[str]) -> Map:
    stack: list[tuple[int, Path]] = []  # (indent, directory) of the enclosing headings
    headings: set[Path] = set()
    modules: list[tuple[str, list[Path]]] = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        body = line.strip()
        heading = HEADING.match(body)
        if heading:
            parent = stack[-1][1] if stack else ROOT
            stack.append((indent, parent / heading.group(1)))
            headings.add(stack[-1][1])
            body = body[heading.end() :]
        here = stack[-1][1] if stack else ROOT
        for name in MODULE.findall(body):
            bases = [here] + ([PACKAGE, SRC, ROOT] if "/" in name else [])
            modules.append((name, [base / name for base in bases]))
    return Map(headings, modules)


def _packages() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts)


def _named_packages(found: Map) -> set[Path]:
    """Packages named by a heading or on the way to a module named by its path."""
    named = set(found.headings)
    for _, places in found.modules:
        for place in places:
            if place.is_file():
                named.update(place.parents)
    return named


def _missing_modules(found: Map) -> list[str]:
    return [
        f"{name} (looked for {', '.join(p.relative_to(ROOT).as_posix() for p in places)})"
        for name, places in found.modules
        if not any(place.is_file() for place in places)
    ]


def _prose_modules(text: str) -> list[str]:
    """Module paths named outside the map: each must be the end of a path under src/."""
    every = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")]
    return [
        name
        for name in MODULE.findall(text)
        if not any(path == name or path.endswith("/" + name) for path in every)
        and not (ROOT / name).is_file()
    ]


def _dotted_missing(text: str) -> list[str]:
    """`ki2api.a.b` names: a module or package, or a name defined in the longest module."""
    missing = []
    for dotted in set(DOTTED.findall(text)):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            base = SRC.joinpath(*parts[:cut])
            module = base.with_suffix(".py")
            if (base / "__init__.py").is_file() or module.is_file():
                rest = parts[cut:]
                if rest:
                    source = module if module.is_file() else base / "__init__.py"
                    defined = re.search(rf"\b{rest[0]}\b", source.read_text(encoding="utf-8"))
                    if not defined:
                        missing.append(dotted)
                break
        else:
            missing.append(dotted)
    return sorted(missing)


def test_the_map_names_modules_that_exist() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    tree = _tree(text)
    assert not _missing_modules(_read_map(tree)), "\n".join(_missing_modules(_read_map(tree)))
    rest = text.replace("\n".join(tree), "")
    assert not _prose_modules(rest), _prose_modules(rest)
    assert not _dotted_missing(text), _dotted_missing(text)


def test_the_map_names_every_package() -> None:
    named = _named_packages(_read_map(_tree(ARCHITECTURE.read_text(encoding="utf-8"))))
    unnamed = [p.relative_to(ROOT).as_posix() for p in _packages() if p not in named]
    assert not unnamed, f"packages missing from docs/architecture.md: {unnamed}"


MAP_SAMPLE = """
```
src/ki2api/
  core/            imports nothing of ours
    messages.py      Conversation
  frontends/       imports core
    openai/          wire.py · to_core.py ·
                     from_core.py (ChunkEncoder) · no_such_module.py
  kiro/
    stream/          codec.py · translate.py
    backend.py       KiroBackend (ki2api.kiro.stream.codec, ki2api.kiro.backend.KiroBackend)
  settings.py      the only module that reads the environment
  cli/main.py, cli/runner.py
src/kiro_emulator/ only the CLI (cli/main.py) imports it
```
"""


def test_the_map_reader_can_fail() -> None:
    found = _read_map(_tree(MAP_SAMPLE))
    assert [name for name, _ in found.modules][:4] == [
        "messages.py",
        "wire.py",
        "to_core.py",
        "from_core.py",
    ]
    assert _missing_modules(found) == [
        "no_such_module.py (looked for src/ki2api/frontends/openai/no_such_module.py)"
    ]
    named = _named_packages(found)
    assert PACKAGE / "kiro/stream" in named and PACKAGE / "cli" in named
    assert PACKAGE / "state" not in named and PACKAGE / "images" not in named
    assert _dotted_missing(MAP_SAMPLE) == []
    assert _dotted_missing("ki2api.kiro.nowhere, ki2api.settings.NoSuchThing") == [
        "ki2api.kiro.nowhere",
        "ki2api.settings.NoSuchThing",
    ]
    assert _prose_modules("see `server/hosts.py` and `kiro/codec.py`") == ["kiro/codec.py"]


# --- section references in code ------------------------------------------------------------------

REFERENCE = re.compile(
    r"(?:(?:docs/)?(?P<doc>[\w-]+\.md)\s*)?"
    + SECTION
    + r"\s?(?P<section>[A-Z](?:\.\d+)*|\d+(?:\.\d+)*)"
)
CHAINED = re.compile(r"\s*(?:,|;|/|and|or)?\s*")
ISSUE = re.compile(r"issue\s+\d+\s*$", re.I)
# A bare numbered section is the protocol's; a lettered one the API notes' (docs/architecture.md).
BARE_NUMBERED = "kiro-protocol.md"
BARE_LETTERED = "api-compat.md"


def _references(text: str) -> list[tuple[int, str, str]]:
    """(line, doc, section) of each section reference. A bare one listed right after another of
    its kind (numbered or lettered) is in the same doc; one after `issue N` is in no doc here."""
    found: list[tuple[int, str, str]] = []
    last: tuple[int, str, str] | None = None  # (end, doc, section) of the previous reference
    for match in REFERENCE.finditer(text):
        before = text[max(0, match.start() - 20) : match.start()]
        doc, section = match.group("doc"), match.group("section")
        if doc is None and ISSUE.search(before):
            continue
        if doc is None and last is not None and CHAINED.fullmatch(text[last[0] : match.start()]):
            doc = last[1] if last[2][0].isalpha() == section[0].isalpha() else None
        if doc is None:
            doc = BARE_LETTERED if section[0].isalpha() else BARE_NUMBERED
        found.append((text.count("\n", 0, match.start()) + 1, doc, section))
        last = (match.end(), doc, section)
    return found


def _sections(doc: Path) -> set[str]:
    """The numbers of a doc's headings: `## 3. The chat call` -> 3, `### A.1 Endpoints` -> A.1."""
    ids = set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#+\s+([A-Z0-9](?:\.?\d+)*)\.?\s", line)
        if heading:
            ids.add(heading.group(1))
    return ids


def _broken_references(paths: list[Path]) -> list[str]:
    sections: dict[str, set[str]] = {}
    broken = []
    for path in paths:
        for line, doc, section in _references(path.read_text(encoding="utf-8")):
            if doc not in sections:
                target = DOCS / doc
                sections[doc] = _sections(target) if target.is_file() else set()
            if section not in sections[doc]:
                where = f"{path.relative_to(ROOT).as_posix()}:{line}"
                broken.append(f"{where} docs/{doc} {SECTION}{section}")
    return broken


def test_section_references_point_at_real_sections() -> None:
    paths = sorted((*SRC.rglob("*.py"), *(ROOT / "tests").rglob("*.py")))
    broken = _broken_references([p for p in paths if "__pycache__" not in p.parts])
    assert not broken, "section references to no section:\n" + "\n".join(broken)


def test_the_reference_reader_can_fail() -> None:
    s = SECTION
    text = (
        f"(docs/kiro-protocol.md {s}3.6, {s}3.5)\n(docs/api-compat.md {s}B.4)\n"
        f"bare {s}5.4 and {s}A.7\nissue 10 {s}3\n"
        f"(docs/models.md {s}2) (docs/kiro-protocol.md {s}10.3)"
    )
    assert _references(text) == [
        (1, "kiro-protocol.md", "3.6"),
        (1, "kiro-protocol.md", "3.5"),
        (2, "api-compat.md", "B.4"),
        (3, "kiro-protocol.md", "5.4"),
        (3, "api-compat.md", "A.7"),
        (5, "models.md", "2"),
        (5, "kiro-protocol.md", "10.3"),
    ]
    assert {"0", "0.1", "3", "3.10", "9"} <= _sections(DOCS / "kiro-protocol.md")
    assert {"A", "A.1", "B.10"} <= _sections(DOCS / "api-compat.md")
