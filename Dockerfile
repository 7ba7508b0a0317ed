# callrouter: FastAGI routing server. Config and plans are mounted at /etc/callrouter.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY callrouter ./callrouter
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/callrouter --create-home callrouter
COPY config.yaml /etc/callrouter/config.yaml
COPY dialplans /etc/callrouter/dialplans

USER callrouter
WORKDIR /var/lib/callrouter
EXPOSE 4573
# Liveness over FastAGI itself: `probe` runs the router's `health` script as Asterisk would.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD ["callrouter", "probe", "--timeout", "3"]
ENTRYPOINT ["callrouter"]
CMD ["serve", "--config", "/etc/callrouter/config.yaml", "--host", "0.0.0.0"]
