# Potluck: one image for the hub and the agent.
#   docker build -t potluck:latest .
#   docker run -p 127.0.0.1:8642:8642 -v potluck:/var/lib/potluck potluck:latest hub --host 0.0.0.0 --allow-insecure-http
#   docker run -v potluck-agent:/var/lib/potluck potluck:latest agent --hub https://hub.example --token-file /run/secrets/token
# Off loopback the hub wants TLS (POTLUCK_HUB_TLS_CERT/KEY, mounted) or --allow-insecure-http behind a
# TLS-terminating proxy. The build and install steps live in deploy/docker-steps.sh, which tests/deploy runs in a clean venv.

FROM python:3.11-slim AS builder
COPY deploy/docker-steps.sh /usr/local/bin/docker-steps
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN docker-steps build /src /dist

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/potluck/venv/bin:$PATH \
    POTLUCK_HUB_DATA_DIR=/var/lib/potluck/hub \
    POTLUCK_AGENT_DATA_DIR=/var/lib/potluck/agent \
    POTLUCK_HUB_AGENT_WHEEL=/opt/potluck/dist/agent.whl
COPY deploy/docker-steps.sh /usr/local/bin/docker-steps
COPY --from=builder /dist/ /opt/potluck/dist/
RUN docker-steps install /opt/potluck/dist /opt/potluck/venv \
    && docker-steps user potluck /var/lib/potluck
USER 10001:10001
WORKDIR /var/lib/potluck
VOLUME ["/var/lib/potluck"]
EXPOSE 8642
# The hub's liveness; an agent container has no HTTP port, so compose turns this off for agents.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["docker-steps", "health"]
ENTRYPOINT ["potluck"]
CMD ["hub", "--host", "0.0.0.0"]
