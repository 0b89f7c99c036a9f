"""Stdlib-only building blocks shared by the hub and the agent."""
