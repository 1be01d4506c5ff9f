"""Ki2API: OpenAI- and Anthropic-compatible gateway over Kiro's Claude access."""

__version__ = "0.2.0"
