"""The edge agent: frame sources, head execution, the streaming client, local fallback, the results log."""
