"""API dialects other than chat completions (Anthropic Messages, OpenAI Responses), translated on the agent for
backends that do not speak them: requests translated in, answers translated out. `select` says, per request and
backend, whether to pass through or translate."""
