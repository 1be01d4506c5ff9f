"""How far the token figures we report are from a real tokenizer, and what counting costs.

`python -m bench.token_accuracy` prints markdown tables (they are copied into docs/usage.md):

1. For English, code, JSON and Chinese samples: the legacy Claude tokenizer's own count
   (`core.tokenizer`), what we report with it (x LEGACY_BIAS), what the script-ratio
   fallback reports, and chars/4, each as a ratio to the tokenizer; then what we report against
   modern Claude, using the legacy tokenizer's measured ratios to Claude 3 - 4.6 (docs/usage.md,
   Accuracy: 0.86x code, 0.95x English, 0.91x JSON, 0.93x Chinese).
2. The cost of `estimate_conversation_tokens` on agent-sized conversations, first seen and
   seen again (the cache), with the tokenizer and with the fallback.

Samples are built offline and deterministically from the Python standard library (sources for
code, docstrings for English, json.dumps of a structure for JSON) and a Chinese text written for
this script.
"""

from __future__ import annotations

import argparse
import email.message
import inspect
import json
import keyword
import sys
import textwrap
import time
from collections.abc import Callable

from ki2api.core.messages import Conversation, Message, TextPart, ToolResultPart, ToolUsePart
from ki2api.core.tokenizer import (
    LEGACY_BIAS,
    ClaudeLegacyTokenizer,
    ScriptEstimator,
    TokenCounter,
)
from ki2api.core.tokens import estimate_conversation_tokens

__all__ = ["main", "samples"]

# Legacy tokenizer count / Claude 3 - 4.6 count, docs/usage.md "Accuracy".
LEGACY_TO_CLAUDE = {"English": 0.95, "Code": 0.86, "JSON": 0.91, "Chinese": 0.93}

CHINESE = textwrap.dedent(
    """\
    网关的职责是把客户端发来的请求翻译成上游服务能够理解的协议，再把上游返回的流式事件逐个转换回
    客户端熟悉的格式。这个过程中最容易出错的地方有三个：第一，工具调用的参数往往被拆成很多片段，
    必须按顺序拼接并在结束时检查它是否是合法的 JSON；第二，历史消息必须严格地在用户和助手之间交替，
    否则上游会直接拒绝；第三，请求体的大小有上限，超过之后上游只会返回一句含糊的错误信息。
    为了让使用者能够据此调整上下文，我们在发送之前就估算请求的大小，并在超出时返回清楚的错误。
    如果启用了裁剪选项，网关会从最早的对话开始删除，直到请求能够放进限制之内，但始终保留系统提示、
    最新的用户消息以及成对的工具调用和结果。用量统计优先采用上游自己给出的数字；只有在上游没有提供
    的时候，才用本地的分词器来估计，并且有意地略微多算一些，因为少算会让客户端以为还有空间，
    最终在真正的上游那里失败。缓存相关的数字从来不会被编造：上游没有说，就报告为零。
    """
)


def _english() -> str:
    docs: list[str] = []
    for owner in (argparse, email.message, json, inspect):
        for name in sorted(dir(owner)):
            doc = inspect.getdoc(getattr(owner, name, None))
            if doc and doc not in docs and name[0] != "_":
                docs.append(doc)
    return "\n\n".join(docs)


def _code() -> str:
    return inspect.getsource(argparse) + inspect.getsource(json.decoder)


def _json() -> str:
    tools = [
        {
            "name": f"tool_{word}",
            "description": f"Runs the {word} step of the pipeline and returns its report.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "File to work on"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                    "flags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["path"],
            },
        }
        for word in keyword.kwlist
    ]
    modules = sorted(sys.stdlib_module_names)[:200]
    listing = [{"module": m, "length": len(m), "private": m.startswith("_")} for m in modules]
    return json.dumps({"tools": tools, "result": listing}, indent=1)


def samples() -> dict[str, str]:
    return {"English": _english(), "Code": _code(), "JSON": _json(), "Chinese": CHINESE * 4}


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x"


def accuracy_table(tokenizer: ClaudeLegacyTokenizer) -> list[str]:
    real = TokenCounter(tokenizer)
    script = TokenCounter(ScriptEstimator())
    rows = [
        "| Sample | chars | tokenizer (legacy Claude) | reported (x1.17) | fallback estimate "
        "| chars/4 | reported vs Claude 3-4.6 |".replace("x1.17", f"x{LEGACY_BIAS}"),
        "|---|---|---|---|---|---|---|",
    ]
    for name, text in samples().items():
        raw = tokenizer.count(text)
        factor = ScriptEstimator.json_factor if name == "JSON" else 1.0
        reported = real.count(text)
        fallback = script.count(text, factor=factor)
        claude = raw / LEGACY_TO_CLAUDE[name]
        rows.append(
            f"| {name} | {len(text):,} | {raw:,} | {reported:,} ({_ratio(reported, raw)}) "
            f"| {fallback:,} ({_ratio(fallback, raw)}) | {_ratio(len(text) / 4, raw)} "
            f"| {_ratio(reported, claude)} |"
        )
    return rows


def _agent_conversation(chars: int) -> Conversation:
    code = _code()
    messages: list[Message] = []
    i = total = 0
    while total < chars:
        start = (i * 4000) % len(code)
        chunk = code[start : start + 4000]
        total += len(chunk) + 150
        use = ToolUsePart(f"call_{i}", "read_file", {"path": f"src/m{i}.py"})
        messages += [
            Message("user", (TextPart(f"Step {i}: look at the next file."),)),
            Message("assistant", (TextPart("Reading it."), use)),
            Message("user", (ToolResultPart(use.id, (TextPart(chunk),)),)),
            Message("assistant", (TextPart(f"Done with step {i}. " * 5),)),
        ]
        i += 1
    messages.append(Message("user", (TextPart("Now summarise."),)))
    return Conversation("claude-sonnet-4.5", tuple(messages), system=("You are a coder.",))


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def cost_table(tokenizer: ClaudeLegacyTokenizer) -> list[str]:
    rows = [
        "| Conversation | tokenizer, first time | tokenizer, history seen before "
        "| fallback estimate |",
        "|---|---|---|---|",
    ]
    tokenizer.count("warm up")  # the first call builds the vocabulary (~0.1 s, once)
    for chars in (20_000, 200_000, 550_000):
        conv = _agent_conversation(chars)
        real = TokenCounter(tokenizer)
        first = _ms(lambda c=conv, r=real: estimate_conversation_tokens(c, counter=r))
        grown = Conversation(conv.model_id, (*conv.messages, *conv.messages[-5:]), conv.system)
        again = _ms(lambda c=grown, r=real: estimate_conversation_tokens(c, counter=r))
        script = TokenCounter(ScriptEstimator())
        fallback = _ms(lambda c=conv, s=script: estimate_conversation_tokens(c, counter=s))
        rows.append(
            f"| ~{chars // 1000}k chars, {len(conv.messages)} messages | {first:.1f} ms "
            f"| {again:.1f} ms | {fallback:.1f} ms |"
        )
    return rows


def main() -> int:
    tokenizer = ClaudeLegacyTokenizer.load()
    if tokenizer is None:
        print("tiktoken is not installed: nothing to compare against", file=sys.stderr)
        return 1
    print("\n".join(accuracy_table(tokenizer)))
    print()
    print("\n".join(cost_table(tokenizer)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
