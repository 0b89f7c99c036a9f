"""The agent daemon: dials out to the hub and relays its requests to local LLM backends."""
