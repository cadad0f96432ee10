"""The AI engine: ingestion, retrieval, prompt assembly and LLM streaming (plain library code)."""
