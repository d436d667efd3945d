# syntax=docker/dockerfile:1
# Multi-stage build: compile in the official Rust image, run in debian slim as a non-root user.
# Default command: the embedded-broker quick start (deploy/docker.toml; no Redis needed).
#   docker build -t socketshark .
#   docker run --rm -p 9000:9000 -p 9102:9102 socketshark
# With your own configuration (Redis, services):
#   docker run --rm -p 9000:9000 -v $PWD/my.toml:/etc/socketshark/socketshark.toml socketshark

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin socketshark \
 && strip -o /socketshark target/release/socketshark

FROM debian:bookworm-slim
# curl only for the HEALTHCHECK; ca-certificates for https:// callbacks and rediss://.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=* curl=* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin socketshark
COPY --from=build /socketshark /usr/local/bin/socketshark
COPY deploy/docker.toml /etc/socketshark/socketshark.toml
USER 10001
# 9000 WebSocket, 9001 publish API (loopback in the default config), 9102 metrics and health.
EXPOSE 9000 9001 9102
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9102/healthz"]
ENTRYPOINT ["/usr/local/bin/socketshark"]
CMD ["-c", "/etc/socketshark/socketshark.toml"]
