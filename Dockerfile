# One image for every role of the fleet: workers, beat, Flower, the sandbox.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \
    CRYPTO_AI_CONFIG=/app/config.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY ratelimit ratelimit
COPY agents agents
COPY exchanges exchanges
COPY llm llm
COPY resilience resilience
COPY sandbox sandbox
COPY monitoring monitoring
COPY tasks tasks
COPY workers workers
COPY main.py celeryconfig.py config.yaml ./
# the seed's module names (thin re-exports; README, Python API)
COPY advanced_rate_limiting.py priority_queue_manager.py fallback_retry_system.py ./
RUN pip install . && useradd --create-home fleet && mkdir -p /tmp/metrics && chown fleet /tmp/metrics
USER fleet

# Overridden per role (see docker-compose.yml and k8s/).
CMD ["celery", "-A", "workers", "worker", "-Q", "high,medium,low"]
