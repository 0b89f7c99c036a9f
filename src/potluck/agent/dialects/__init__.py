"""Other API dialects spoken over a chat-completions backend: requests translated in, answers translated out."""
