"""The gateway's web-search loop for a Responses request with a `web_search` tool
(docs/api-compat.md §R.7, docs/websearch.md).

The model is offered the search function (`frontends/openai/responses_search.py`). A round is one
answer from Kiro. When a round ends calling only that function (no client function, not cut by
`max_output_tokens`), the gateway runs each query on Kiro's search (`KiroWebSearch`, through the
pool as Claude Code's searches), appends the calls and their results to the conversation and asks
Kiro again; after `MAX_ROUNDS` search rounds the function is no longer offered. A round that
calls a client function ends the loop (its search calls are dropped, not run).

What the client gets is one answer's events: the rounds' texts, thinking and client calls as they
come (tool-call indices renumbered across rounds), each search as a tool call whose id is a
`SearchCalls` entry (the Responses builder renders it as a `web_search_call` item: its start
before the search, its end after), and at the end one `Usage`, the sum of the rounds', then the
last round's stop. A failed search is a `failed` call and the model is told it failed; a failed
round is the request's error, as without searches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from ki2api.core.errors import GatewayError
from ki2api.core.events import (
    Event,
    MessageStop,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from ki2api.core.messages import (
    Conversation,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolChoice,
    ToolResultPart,
    ToolUsePart,
)
from ki2api.core.search_results import summary_text
from ki2api.core.tokens import estimate_text_tokens
from ki2api.core.trace import RequestTrace
from ki2api.frontends.openai.responses_from_core import new_item_id
from ki2api.frontends.openai.responses_search import SearchCall, SearchCalls, search_query_of
from ki2api.server.estimates import estimate_input_tokens
from ki2api.server.services import Services
from ki2api.server.shaping import answer_batches

__all__ = ["MAX_ROUNDS", "MAX_SEARCHES_PER_ROUND", "SearchLoop"]

MAX_ROUNDS = 3  # search rounds; the answer after them is asked without the search function
MAX_SEARCHES_PER_ROUND = 5  # more calls in one round are not run
Shaper = Callable[[AsyncGenerator[list[Event], None]], AsyncIterator[list[Event]]]


class _Round:
    """One answer of Kiro, filtered: the search function's calls kept aside, indices moved."""

    def __init__(self, name: str, offset: int) -> None:
        self.name = name
        self.offset = offset
        self.next_index = offset
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.signature: str | None = None
        self.searches: dict[int, list[str]] = {}  # the search calls' arguments
        self.client_calls = 0
        self.usage: Usage | None = None
        self.stop: StopReason = "end_turn"

    def feed(self, batch: list[Event]) -> list[Event]:
        out = [self._one(event) for event in batch]
        return [event for event in out if event is not None]

    def _one(self, event: Event) -> Event | None:
        match event:
            case TextDelta(text=text):
                self.text.append(text)
            case ThinkingDelta(text=text, signature=signature):
                self.thinking.append(text)
                self.signature = signature or self.signature
            case ToolCallStart(index=index, name=name) if name == self.name:
                self.searches[index] = []
                return None
            case ToolCallStart(index=index):
                self.client_calls += 1
                self.next_index = max(self.next_index, self.offset + index + 1)
                return dataclasses.replace(event, index=self.offset + index)
            case ToolArgsDelta(index=index) | ToolCallEnd(index=index):
                return self._args(event, index)
            case Usage():
                self.usage = event
                return None
            case MessageStop(reason=reason):
                self.stop = reason
                return None
        return event

    def _args(self, event: ToolArgsDelta | ToolCallEnd, index: int) -> Event | None:
        if index not in self.searches:
            return dataclasses.replace(event, index=self.offset + index)
        if isinstance(event, ToolArgsDelta):
            self.searches[index].append(event.fragment)
        return None

    def runs_searches(self) -> bool:
        cut = self.stop in ("max_tokens", "context_window_exceeded")
        return bool(self.searches) and not self.client_calls and not cut

    def queries(self) -> list[str | None]:
        return [search_query_of("".join(args)) for _, args in sorted(self.searches.items())]

    def assistant_parts(self) -> list[Part]:
        parts: list[Part] = []
        if self.thinking or self.signature:
            parts.append(ThinkingPart("".join(self.thinking), signature=self.signature))
        if "".join(self.text).strip():
            parts.append(TextPart("".join(self.text)))
        return parts

    def usage_or_estimate(self, conv: Conversation) -> Usage:
        if self.usage is not None:
            return self.usage
        output = estimate_text_tokens("".join(self.text) + "".join(self.thinking))
        return Usage(input_tokens=estimate_input_tokens(conv), output_tokens=output)


def _sum(usages: list[Usage]) -> Usage:
    def total(values: list[int | None]) -> int | None:
        return None if all(v is None for v in values) else sum(v or 0 for v in values)

    return Usage(
        input_tokens=sum(u.input_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        cache_read_input_tokens=total([u.cache_read_input_tokens for u in usages]),
        cache_creation_input_tokens=total([u.cache_creation_input_tokens for u in usages]),
        estimated=any(u.estimated for u in usages),
        credits=None
        if all(u.credits is None for u in usages)
        else sum(u.credits or 0 for u in usages),
    )


class SearchLoop:
    """One request's rounds (`batches()`), sharing `calls` with the response's builder."""

    def __init__(
        self,
        services: Services,
        conv: Conversation,
        calls: SearchCalls,
        *,
        stream: bool,
        context_window: int,
        trace: RequestTrace | None,
    ) -> None:
        self.services = services
        self.conv = conv
        self.calls = calls
        self.stream = stream
        self.context_window = context_window
        self.trace = trace

    def _round(self, conv: Conversation, shaped: Shaper) -> AsyncIterator[list[Event]]:
        return answer_batches(
            self.services.require_backend(),
            conv,
            input_tokens=estimate_input_tokens(conv),
            context_window=self.context_window,
            trace=self.trace,
            stream=self.stream,
            shaped=shaped,
        )

    async def batches(self, shaped: Shaper) -> AsyncGenerator[list[Event], None]:
        """The answer's batches, every round's (`shaped`: the dialect's shaping, per round)."""
        conv, usages, offset = self.conv, [], 0
        for number in range(MAX_ROUNDS + 1):
            if number == MAX_ROUNDS:
                conv = _without_search(conv, self.calls.name)
            if number:
                conv = self.services.require_backend().fit(conv)
            round_ = _Round(self.calls.name, offset)
            async for batch in self._round(conv, shaped):
                out = round_.feed(batch)
                if out:
                    yield out
            usages.append(round_.usage_or_estimate(conv))
            offset = round_.next_index
            if number == MAX_ROUNDS or not round_.runs_searches():
                break
            turn: tuple[list[Part], list[Part]] = (round_.assistant_parts(), [])
            for query in round_.queries()[:MAX_SEARCHES_PER_ROUND]:
                item_id = new_item_id("ws")
                call = self.calls.calls[item_id] = SearchCall(query or "")
                yield [ToolCallStart(index=offset, id=item_id, name=self.calls.name)]
                await self._search(call)
                yield [ToolCallEnd(index=offset)]
                offset += 1
                _add_call(turn, item_id, call, self.calls.name)
            conv = _next_round(conv, *turn, self.calls.name)
        yield [*self._usage(usages, round_.usage), MessageStop(round_.stop)]

    def _usage(self, usages: list[Usage], last: Usage | None) -> list[Event]:
        """The rounds' usage summed (a round without Kiro's figures: estimated); one round: as
        Kiro reported it, or none (the builder estimates it as for any answer)."""
        if len(usages) == 1:
            return [last] if last is not None else []
        usage = _sum(usages)
        if self.trace is not None:
            self.trace.usage(usage)
        return [usage]

    async def _search(self, call: SearchCall) -> None:
        if not call.query:
            call.status = "failed"
            call.text = "The search was not run: the call had no 'query' string."
            return
        try:
            results = await self.services.require_web_search().search(call.query)
        except GatewayError as err:
            call.status = "failed"
            call.text = f'The web search for "{call.query}" failed: {err.message}'
            return
        call.status = "completed"
        call.sources = tuple(hit.url for hit in results)
        call.titles = tuple(hit.title for hit in results)
        call.text = summary_text(call.query, tuple(results))


def _add_call(
    turn: tuple[list[Part], list[Part]], item_id: str, call: SearchCall, name: str
) -> None:
    uses, results = turn
    uses.append(ToolUsePart(id=item_id, name=name, input={"query": call.query}))
    failed = call.status != "completed"
    results.append(ToolResultPart(item_id, (TextPart(call.text),), is_error=failed))


def _next_round(
    conv: Conversation, assistant: list[Part], results: list[Part], name: str
) -> Conversation:
    """The conversation with the round's turn and the search results; a tool_choice that asked
    for a search is satisfied."""
    messages = (
        *conv.messages,
        Message("assistant", tuple(assistant)),
        Message("user", tuple(results)),
    )
    choice = conv.tool_choice
    if choice.mode == "tool" and choice.name == name:
        choice = ToolChoice("auto", parallel=choice.parallel)
    return dataclasses.replace(conv, messages=messages, tool_choice=choice)


def _without_search(conv: Conversation, name: str) -> Conversation:
    """The last answer: no search function; with no client function left, a text answer is
    asked for (Kiro still sees the function, as a placeholder for its calls in the history)."""
    tools = tuple(t for t in conv.tools if t.name != name)
    choice = conv.tool_choice
    if not tools:
        choice = ToolChoice("none", parallel=choice.parallel)
    elif choice.mode == "tool" and choice.name == name:
        choice = ToolChoice("auto", parallel=choice.parallel)
    return dataclasses.replace(conv, tools=tools, tool_choice=choice)
