# syntax=docker/dockerfile:1
#
# gpt-load-gateway with its web console, on Debian slim, as a non-root user.
#
#   docker build -t gpt-load-rs .
#   docker run -d -p 3001:3001 -v gpt-load-data:/app/data --name gpt-load gpt-load-rs
#
# Both build stages run scripts/build-release.sh, the same steps as a release build outside
# Docker: `console` (npm ci && npm run build) in a Node stage, `binary` (cargo build --release
# --locked) in a Rust stage that gets web-console/dist from the first. See docs/DEPLOY.md.

ARG NODE_IMAGE=node:22-bookworm-slim
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# 1. The web console: web-console/dist.
FROM ${NODE_IMAGE} AS console
WORKDIR /src
COPY scripts/build-release.sh scripts/
COPY web-console/ web-console/
RUN --mount=type=cache,target=/root/.npm \
    scripts/build-release.sh console

# 2. The release binary, embedding the console.
FROM ${RUST_IMAGE} AS binary
WORKDIR /src
# jemalloc, the gateway's allocator, is built from source with make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY . .
COPY --from=console /src/web-console/dist web-console/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    SKIP_CONSOLE_BUILD=1 RELEASE_OUT_DIR=/out scripts/build-release.sh binary

# 3. The runtime: the binary alone (TLS roots are built in; the health check is a subcommand).
FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 gpt-load \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin gpt-load \
    && mkdir -p /app/data \
    && chown 10001:10001 /app/data \
    && chmod 0700 /app/data
WORKDIR /app
COPY --from=binary /out/gpt-load-gateway /app/gpt-load-gateway

# gpt-load's defaults; every other variable is read from the environment or /app/.env
# (docs/CONFIG.md). Without AUTH_KEY an admin key is generated into /app/data/auth_key.
ENV HOST=0.0.0.0 \
    PORT=3001 \
    DATA_DIR=/app/data
VOLUME ["/app/data"]
EXPOSE 3001
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=40s --retries=3 \
    CMD ["/app/gpt-load-gateway", "healthcheck"]
ENTRYPOINT ["/app/gpt-load-gateway"]
