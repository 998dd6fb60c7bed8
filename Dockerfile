# One image for every role of the fleet: workers, beat, Flower, the sandbox.
# Runs as uid/gid 10001 (numeric, so Kubernetes' runAsNonRoot can verify it); everything the
# fleet writes lives under /var/lib/crypto-ai (mount a volume there) and /tmp. The code and
# /app stay read-only: the image works with readOnlyRootFilesystem.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/var/lib/crypto-ai \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \
    CRYPTO_AI_CONFIG=/app/config.yaml \
    CRYPTO_AI__REPORTS__DIR=/var/lib/crypto-ai/reports \
    CRYPTO_AI__TRACING__DIR=/var/lib/crypto-ai/traces \
    CRYPTO_AI__REDIS__EMBEDDED__DIR=/var/lib/crypto-ai/redis

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
# Flower only starts with FLOWER_BASIC_AUTH set (docs/DEPLOY.md)
COPY deploy/start-flower.sh /usr/local/bin/start-flower
RUN pip install . \
    && groupadd --gid 10001 fleet \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/crypto-ai --no-create-home \
       --shell /usr/sbin/nologin fleet \
    && mkdir -p /var/lib/crypto-ai /tmp/metrics \
    && chown 10001:10001 /var/lib/crypto-ai /tmp/metrics \
    && chmod 0755 /usr/local/bin/start-flower
VOLUME ["/var/lib/crypto-ai"]
USER 10001:10001

# Overridden per role (see docker-compose.yml and k8s/); health: `python -m workers.probe`.
CMD ["celery", "-A", "workers", "worker", "-Q", "high,medium,low"]
