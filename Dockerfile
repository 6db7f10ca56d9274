# syntax=docker/dockerfile:1
# The spendlake image: `docker compose up --build` builds it (compose.yaml), or `docker build -t spendlake .`
#   docker run --rm spendlake --help
#   docker run --rm -v "$PWD/lake:/var/lib/spendlake/lake" spendlake query --lake /var/lib/spendlake/lake "FROM daily_cost_by_team"
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# What `pip install .` needs and nothing else: the project file, the README it names, the packages
# of [tool.setuptools] packages (sql/*.sql, the price catalog and the event schema ship inside them).
WORKDIR /tmp/spendlake-src
COPY pyproject.toml README.md ./
COPY spendlake ./spendlake
COPY ingest ./ingest
COPY pricing ./pricing
COPY aggregator ./aggregator
COPY alerting ./alerting
COPY sql ./sql
RUN pip install ".[fast,s3]" && cd / && rm -rf /tmp/spendlake-src

# A non-root user owning the lake directory: a named volume mounted there starts as a copy of it,
# ownership included, so the service writes its lake without running as root.
RUN groupadd --system --gid 10001 spendlake \
 && useradd --system --uid 10001 --gid spendlake --home-dir /var/lib/spendlake --shell /usr/sbin/nologin spendlake \
 && mkdir -p /var/lib/spendlake/lake /etc/spendlake \
 && chown -R spendlake:spendlake /var/lib/spendlake
USER 10001:10001
WORKDIR /var/lib/spendlake

# /metrics of `spendlake serve` ([metrics] listen = "0.0.0.0:9464" in deploy/spendlake.toml)
EXPOSE 9464
EXPOSE 4318
ENTRYPOINT ["spendlake"]
CMD ["serve", "--config", "/etc/spendlake/spendlake.toml"]
