"""Wire types shared by the hub and the agent. No I/O; imports nothing beyond msgspec."""
