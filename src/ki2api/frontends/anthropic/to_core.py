"""Anthropic Messages request -> core `Conversation` (docs/api-compat.md §B.2, §B.3). Pure.

* `system` (a string or text blocks) and every `role: "system"` message go to
  `Conversation.system`, in request order, one entry per non-empty text.
* Blocks: `text`, `image` (base64 in the four media types; a `url` source in a user message
  becomes a `RemoteImagePart` when the gateway fetches images, fetched by the chat pipeline's
  images step, `ki2api.images.remote`; refused otherwise), `document` (text and `content`
  sources become text; PDFs and files are refused with a 400), `tool_use`, `tool_result`
  (string or blocks, `is_error`), `thinking` (-> `ThinkingPart`, an empty signature is None).
  `redacted_thinking` is dropped: it carries no text Kiro could read.
* Server tools (`web_search_*`, `code_execution_*`, ...) are dropped from `tools`; server-tool
  blocks in the history become short text notes so the conversation stays readable.
* `tool_choice`: `any` -> required; `disable_parallel_tool_use` -> `parallel=False`.
* `thinking`: enabled (budget) / adaptive (effort from `output_config.effort`) / disabled.
* `metadata.user_id`: Claude Code's session in it names the conversation
  (`Conversation.conversation_id`, see kiro/request/conversation_id.py); the rest of
  `metadata` is ignored.
* `cache_control`, `top_k`, `service_tier` and unknown fields: accepted, ignored.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

import orjson

from ki2api.core.errors import ErrorKind, GatewayError
from ki2api.core.messages import (
    Conversation,
    GenParams,
    ImagePart,
    Message,
    Part,
    RemoteImagePart,
    TextPart,
    ThinkingConfig,
    ThinkingPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    ToolUsePart,
)
from ki2api.frontends.anthropic.wire import (
    Base64Source,
    ContentBlock,
    ContentSource,
    CountTokensRequest,
    CustomTool,
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    PlainTextSource,
    RedactedThinkingBlock,
    ServerToolBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)

__all__ = ["SUPPORTED_MEDIA_TYPES", "client_session_id", "image_from_base64", "to_conversation"]

SUPPORTED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_WHITESPACE = re.compile(r"\s+")
# Claude Code's `metadata.user_id`: `user_<hash>_account_<uuid>_session_<uuid>`
_SESSION = re.compile(r"_session_([0-9A-Za-z-]{8,})$")


def to_conversation(
    req: MessagesRequest | CountTokensRequest, kiro_model_id: str, *, remote_images: bool = False
) -> Conversation:
    """Translate a validated request; unsupported values raise INVALID_REQUEST with `param`.
    `remote_images`: `url` image sources of user messages become `RemoteImagePart`s (the
    gateway fetches them), else they are refused."""
    system = _texts(req.system)
    messages: list[Message] = []
    for i, msg in enumerate(req.messages):
        if msg.role == "system":
            system.extend(_texts(msg.content))
            continue
        remote = remote_images and msg.role == "user"
        parts = _parts(msg.content, f"messages.{i}.content", remote)
        messages.append(Message(msg.role, parts))
    tools = tuple(_tool(t) for t in req.tools or () if isinstance(t, CustomTool))
    return Conversation(
        model_id=kiro_model_id,
        messages=tuple(messages),
        system=tuple(system),
        tools=tools,
        tool_choice=_tool_choice(req, tools),
        params=_params(req),
        conversation_id=client_session_id(getattr(req, "metadata", None)),
    )


def client_session_id(metadata: Any) -> str | None:
    """The session a client named in `metadata.user_id`, or None.

    Claude Code sends `user_<hash>_account_<uuid>_session_<uuid>`: the session part names one
    conversation. Newer builds may send a JSON object string with `session_id`. Any other
    `user_id` names a user, not a conversation, and is not used."""
    if not isinstance(metadata, dict):
        return None
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        return None
    if user_id.startswith("{"):
        try:
            obj = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return None
        session = obj.get("session_id") if isinstance(obj, dict) else None
        return session if isinstance(session, str) and session else None
    match = _SESSION.search(user_id)
    return match.group(1) if match else None


def _texts(content: str | list[Any] | None) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    return [b.text for b in content if isinstance(b, TextBlock) and b.text]


def _parts(content: str | list[ContentBlock], where: str, remote: bool) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),) if content else ()
    out: list[Part] = []
    for j, block in enumerate(content):
        out.extend(_block(block, f"{where}.{j}", remote))
    return tuple(out)


def _block(block: ContentBlock, param: str, remote: bool) -> list[Part]:
    match block:
        case TextBlock(text=text):
            return [TextPart(text)] if text else []
        case ImageBlock():
            return [_image(block, param, remote)]
        case DocumentBlock():
            return _document(block, param)
        case ToolUseBlock(id=tid, name=name, input=args):
            return [ToolUsePart(id=tid, name=name, input=args)]
        case ToolResultBlock():
            return [_tool_result(block, param, remote)]
        case ThinkingBlock(thinking=text, signature=sig):
            return [ThinkingPart(text, sig or None)] if text else []
        case RedactedThinkingBlock():
            return []
        case ServerToolBlock():
            note = _server_block_note(block)
            return [TextPart(note)] if note else []
    raise AssertionError(f"unhandled block {type(block).__name__}")  # pragma: no cover


def _image(block: ImageBlock, param: str, remote: bool) -> ImagePart:
    source = block.source
    if isinstance(source, Base64Source):
        return image_from_base64(source.media_type, source.data, f"{param}.source")
    if isinstance(source, URLSource) and remote:
        return RemoteImagePart.placeholder(source.url.strip(), param=f"{param}.source")
    if source.type == "url":
        raise _invalid(
            "Remote image URLs are turned off on this gateway (KI2API_IMAGE_FETCH): "
            "send the image as a base64 source.",
            f"{param}.source",
        )
    raise _invalid("File sources (the Files API) are not supported: send base64.", param)


def image_from_base64(media_type: str, data: str, param: str) -> ImagePart:
    """A validated inline image: one of the four media types, strict base64, not empty."""
    kind = media_type.strip().lower()
    kind = "image/jpeg" if kind == "image/jpg" else kind
    if kind not in SUPPORTED_MEDIA_TYPES:
        supported = ", ".join(SUPPORTED_MEDIA_TYPES)
        raise _invalid(
            f"Unsupported image media_type {media_type!r}; supported: {supported}.",
            f"{param}.media_type",
        )
    clean = _WHITESPACE.sub("", data)
    try:
        decoded = binascii.a2b_base64(clean, strict_mode=True)
    except binascii.Error:
        raise _invalid("The image data is not valid base64.", f"{param}.data") from None
    if not decoded:
        raise _invalid("The image data is empty.", f"{param}.data")
    return ImagePart(media_type=kind, data_b64=clean)


def _document(block: DocumentBlock, param: str) -> list[Part]:
    source = block.source
    header = "\n".join(t for t in (block.title, block.context) if t)
    if isinstance(source, PlainTextSource):
        body: list[Part] = [TextPart(source.data)] if source.data else []
    elif isinstance(source, ContentSource):
        body = list(_parts(source.content, f"{param}.source.content", False))  # type: ignore[arg-type]
    elif isinstance(source, Base64Source) and source.media_type.lower().startswith("text/"):
        body = [TextPart(_decode_text(source.data, f"{param}.source.data"))]
    elif isinstance(source, Base64Source) and source.media_type.lower() == "application/pdf":
        raise _invalid(
            "PDF documents are not supported by Kiro: extract the text and send it as a text "
            "block or a document with a text source.",
            f"{param}.source",
        )
    else:
        raise _invalid(
            "Only text documents (a `text` or `content` source) are supported by Kiro.",
            f"{param}.source",
        )
    return ([TextPart(header)] if header else []) + body


def _decode_text(data: str, param: str) -> str:
    try:
        return binascii.a2b_base64(_WHITESPACE.sub("", data), strict_mode=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid("The document data is not valid base64 UTF-8 text.", param) from None


def _tool_result(block: ToolResultBlock, param: str, remote: bool) -> ToolResultPart:
    content = block.content
    parts: list[TextPart | ImagePart] = []
    if isinstance(content, str):
        parts = [TextPart(content)] if content else []
    elif content is not None:
        for k, inner in enumerate(content):
            for part in _block(inner, f"{param}.content.{k}", remote):
                assert isinstance(part, TextPart | ImagePart)
                parts.append(part)
    return ToolResultPart(
        tool_use_id=block.tool_use_id, content=tuple(parts), is_error=bool(block.is_error)
    )


def _server_block_note(block: ServerToolBlock) -> str:
    """A server tool's call or result in the history, as a line of text for the model."""
    if block.type in ("server_tool_use", "mcp_tool_use"):
        query = block.input.get("query") if isinstance(block.input, dict) else None
        return f"[{block.name or 'server tool'}: {query}]" if query else ""
    if isinstance(block.content, list):
        lines = [
            f"- {item.get('title') or ''} {item.get('url') or ''}".rstrip()
            for item in block.content
            if isinstance(item, dict) and item.get("url")
        ]
        if lines:
            return "[Search results]\n" + "\n".join(lines)
    return ""


def _tool(tool: CustomTool) -> ToolSpec:
    schema = tool.input_schema or {"type": "object", "properties": {}}
    return ToolSpec(name=tool.name, description=tool.description or "", input_schema=schema)


def _tool_choice(
    req: MessagesRequest | CountTokensRequest, tools: tuple[ToolSpec, ...]
) -> ToolChoice:
    choice = req.tool_choice
    if choice is None:
        return ToolChoice("auto")
    parallel = not choice.disable_parallel_tool_use
    if choice.type == "auto":
        return ToolChoice("auto", parallel=parallel)
    if choice.type == "none":
        return ToolChoice("none", parallel=parallel)
    if choice.type == "any":
        return ToolChoice("required", parallel=parallel) if tools else ToolChoice("auto")
    name = choice.name or ""
    if name not in {t.name for t in tools}:
        if _is_server_tool_name(req, name):  # a server tool Kiro cannot be told to call
            return ToolChoice("auto", parallel=parallel)
        raise _invalid(
            f"tool_choice names the tool {name!r}, which is not in 'tools'.", "tool_choice.name"
        )
    return ToolChoice("tool", name=name, parallel=parallel)


def _is_server_tool_name(req: MessagesRequest | CountTokensRequest, name: str) -> bool:
    return any(
        not isinstance(t, CustomTool) and getattr(t, "name", None) == name for t in req.tools or ()
    )


def _thinking(req: MessagesRequest | CountTokensRequest) -> ThinkingConfig | None:
    thinking = req.thinking
    if thinking is None or thinking.type == "disabled":
        return None
    if thinking.type == "enabled":
        return ThinkingConfig("enabled", budget_tokens=thinking.budget_tokens)
    effort = (req.output_config or {}).get("effort")
    return ThinkingConfig("adaptive", effort=effort if isinstance(effort, str) else None)


def _params(req: MessagesRequest | CountTokensRequest) -> GenParams:
    if isinstance(req, CountTokensRequest):
        return GenParams(thinking=_thinking(req))
    return GenParams(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=tuple(req.stop_sequences or ()),
        thinking=_thinking(req),
    )


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)
