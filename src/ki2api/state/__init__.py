"""Where accounts, tokens, health and usage live (see `state.base` for the interface)."""
