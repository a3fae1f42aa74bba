"""An OpenAI-compatible chat-completions simulator: latency, streaming, tool calls and faults
drawn from configured distributions, deterministic under a seed (docs/llmsim.md)."""
