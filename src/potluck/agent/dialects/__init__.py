"""API dialects other than chat completions, translated on the agent for backends that do not speak them."""
