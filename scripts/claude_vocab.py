"""Maintainer script (never run by `make` or CI): the Claude legacy vocabulary Ki2API ships, and
the golden counts its test checks.

    python scripts/claude_vocab.py vocab TOKENIZER_JSON src/ki2api/core/claude_legacy.tiktoken
    python scripts/claude_vocab.py golden tests/fixtures/tokenizer/claude_legacy_counts.json

`vocab`: TOKENIZER_JSON is `anthropic/tokenizer.json` from the `anthropic` SDK 0.38.0 wheel
(MIT; the last release to ship it). That tokenizer is NFKC, GPT-2's byte-level split and a BPE
whose merge order is the order of the merged tokens' ids (checked here), so tiktoken's BPE with
rank = id gives the same tokens. Written in tiktoken's format: one line per token, the token's
bytes in base64 and its rank, specials left out (`core/tokenizer.py` lists them).

`golden`: texts of this repository and of the shared docs (English, Chinese, code, JSON) cut
into pieces, plus seeded random strings over an alphabet of hard cases (whitespace runs,
contractions, CJK, emoji, compatibility characters NFKC rewrites, the special tokens), each
with its count by the `anthropic-tokenizer` package (0.1.0: a separate Rust implementation of
the same tokenizer.json).
"""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte, back to the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def vocab(tokenizer_json: Path, out: Path) -> None:
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    assert spec["normalizer"] == {"type": "NFKC"}, spec["normalizer"]
    assert spec["pre_tokenizer"]["type"] == "ByteLevel", spec["pre_tokenizer"]
    model = spec["model"]
    ids: dict[str, int] = model["vocab"]
    last = -1
    for merge in model["merges"]:  # tiktoken merges by the merged token's rank
        left, right = merge.split(" ")
        assert ids[left + right] > last, merge
        last = ids[left + right]
    specials = {t["content"] for t in spec["added_tokens"]}
    to_byte = _byte_alphabet()
    lines = [
        f"{base64.b64encode(bytes(to_byte[c] for c in token)).decode()} {rank}"
        for token, rank in sorted(ids.items(), key=lambda item: item[1])
        if token not in specials
    ]
    out.write_text("\n".join(lines) + "\n", encoding="ascii")
    print(f"{out}: {len(lines)} tokens; specials {sorted(specials)}")


_HARD = (
    "abc xyz 123 ,.;!? \n\t   中文字符日本語 한국어 😀👍🏽 éàü ﬁ ℌ ① ＡＢ Ⅻ <EOT> <META> "
    "'s 're 'll \u00a0 \u200b \u3000 \r\n"
)


def _texts() -> list[str]:
    sources = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "src").rglob("*.py"))[:60]
    sources += sorted((ROOT.parent / "shared" / "docs").glob("*.md"))
    rnd = random.Random(17)
    texts: list[str] = []
    for path in sources:
        body = path.read_text(encoding="utf-8", errors="replace")
        for _ in range(4):
            start = rnd.randrange(max(1, len(body) - 1))
            texts.append(body[start : start + rnd.choice((40, 300, 1500))])
    for _ in range(200):
        texts.append("".join(rnd.choice(_HARD) for _ in range(rnd.randint(1, 120))))
    texts += ["", " ", "<EOT>", "<META_START>x<META_END>", "<SOS>hi", "ﬁ①Ⅻ", "  \n\n  ", "a" * 3000]
    return texts


def golden(out: Path) -> None:
    from anthropic_tokenizer import count_tokens  # the reference implementation

    cases = [[text, int(count_tokens(text))] for text in _texts()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cases, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{out}: {len(cases)} texts, {sum(c for _, c in cases)} tokens")


if __name__ == "__main__":
    if sys.argv[1:2] == ["vocab"] and len(sys.argv) == 4:
        vocab(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["golden"] and len(sys.argv) == 3:
        golden(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
