"""Fakes over real loopback sockets (SMTP, OpenAI-compatible LLM, ...) and their fixtures."""
