"""The `ki2api` command line; the only place that starts processes or the emulator.

- `main`: argument parsing, `ki2api serve | demo | emulator | doctor | accounts | usage`.
- `runner`: `serve` (real Kiro) and `demo` (gateway + the built-in emulator) as processes.
- `doctor`: a plain-language diagnosis of the login and the upstream.
- `accounts_commands`: `ki2api accounts …`, the pool kept in the state store.
- `usage_commands`: `ki2api usage`, sums of the usage log.
"""
