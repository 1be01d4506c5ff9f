"""The wire stream: AWS event-stream bytes -> core stream events. Sans-I/O, no awaits.

- `codec`: the incremental event-stream decoder (bounds, both CRCs, fail closed) and encoder.
- `translate`: `KiroStreamTranslator`, decoded frames -> core events (tool-input assembly,
  usage, exception frames via `kiro.classify`).
- `thinking_split`: splits a leading `<thinking>…</thinking>` block off the text stream.
- `called_text`: the textual `[Called NAME with args: …]` fallback -> real tool calls.
"""
