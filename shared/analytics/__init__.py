"""Usage analytics: recording agent invocations, writing them, reading them, and rolling them up."""
