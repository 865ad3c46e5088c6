# community-bot: the Matrix bot and its SSO web callback in one process.
#   docker build -t community-bot .
#   docker run -v ./config:/config:ro -v bot-data:/data -p 8080:8080 community-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY web_callback ./web_callback
COPY migrations ./migrations
# Compiled at build time (PYTHONDONTWRITEBYTECODE keeps the running container from writing .pyc;
# compiling the libraries at every launch would add about a second to start-up).
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin bot \
 && mkdir -p /data /config && chown bot /data

USER bot
# Keep the database, the device credentials and the encryption store across upgrades.
VOLUME ["/data"]
ENV CB_DATA_DIR=/data CB_WEB_LISTEN=0.0.0.0:8080
EXPOSE 8080
# Ready = logged in, synced recently, database answering (GET /readyz; 503 names what failed).
# The slim image has no curl: Python asks. The port follows CB_WEB_LISTEN.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request as u; port = os.environ.get('CB_WEB_LISTEN', ':8080').rsplit(':', 1)[1]; sys.exit(0 if u.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=8).status == 200 else 1)"]
ENTRYPOINT ["community-bot"]
CMD ["run", "--config", "/config/config.toml"]
