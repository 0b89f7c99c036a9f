"""Transport-free hub services: scheduling, agent sessions, dispatch, auth, metering."""
