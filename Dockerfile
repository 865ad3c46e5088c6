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
RUN pip install --no-compile . \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin bot \
 && mkdir -p /data /config && chown bot /data

USER bot
# Keep the database, the device credentials and the encryption store across upgrades.
VOLUME ["/data"]
ENV CB_DATA_DIR=/data CB_WEB_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["community-bot"]
CMD ["run", "--config", "/config/config.toml"]
