# callrouter: FastAGI routing server. Config and plans are mounted at /etc/callrouter.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# glibc gives each thread (the SQLite and spool threads) malloc arenas of its own and keeps what the process
# freed in them: two arenas keep 14 MB less after a burst of calls (docs/benchmarks.md, session 13).
ENV MALLOC_ARENA_MAX=2
WORKDIR /app
COPY pyproject.toml README.md ./
COPY callrouter ./callrouter
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/callrouter --create-home callrouter
COPY config.yaml /etc/callrouter/config.yaml
COPY dialplans /etc/callrouter/dialplans
COPY ivr_prompts /etc/callrouter/ivr_prompts
# Paths in config.yaml are relative to it: the CDR spool (and the SQLite file when no Postgres URL is
# given) live in /etc/callrouter/var. It must be a volume: a spool lost with the container loses CDRs.
RUN mkdir -p /etc/callrouter/var && chown callrouter /etc/callrouter/var
VOLUME ["/etc/callrouter/var"]

USER callrouter
WORKDIR /var/lib/callrouter
# FastAGI, the admin API (health, /metrics, /api), the exporter's /metrics when run as `exporter`.
EXPOSE 4573 8080 9464
# Liveness: the router's `health` script over FastAGI, as Asterisk would run it, and the admin API's /healthz.
# (Override the healthcheck for `exporter` containers: see docker-compose.yml.)
HEALTHCHECK --interval=30s --timeout=8s --start-period=15s \
    CMD ["callrouter", "probe", "--timeout", "3", "--admin", "http://127.0.0.1:8080"]
# Production: CALLROUTER_DATABASE_URL=postgresql+asyncpg://... and, once per release,
# `docker run ... db upgrade --config /etc/callrouter/config.yaml` before `serve`.
ENTRYPOINT ["callrouter"]
CMD ["serve", "--config", "/etc/callrouter/config.yaml", "--host", "0.0.0.0"]
