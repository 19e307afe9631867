"""The supervisor graph: agents, tools and model providers. Knows nothing of HTTP, auth or storage."""
