"""The request: a core `Conversation` -> the `generateAssistantResponse` JSON body. Pure.

- `build`: the body itself (`build_request`, `build_kiro_request`).
- `history`: alternation, merging and tool-pairing repairs Kiro needs.
- `tools`: tool names (shortened and mapped back), descriptions, schemas, `tool_choice`.
- `thinking_fields`: the thinking-mode tags Kiro understands (budget / effort).
- `budget`: the upstream size limits (text budget, image bytes, tool count), checked before sending.
- `conversation_id`: one `conversationId` per client conversation.
"""
