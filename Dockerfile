# sting-proxy: multi-stage build. The builder compiles the release binary (pingora needs cmake
# for zlib-ng); the runtime image holds the binary, its shipped config and curl for the
# HEALTHCHECK, and runs as an unprivileged user.
#   docker build -t sting-proxy .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY assets ./assets
COPY docs/openapi.yaml ./docs/openapi.yaml
RUN cargo build --release --locked --bin sting-proxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin sting
COPY --from=build /src/target/release/sting-proxy /usr/local/bin/sting-proxy
COPY conf/sting-proxy.toml /etc/sting-proxy/sting-proxy.toml
USER sting
ENV STING_LISTEN=0.0.0.0:8080 \
    STING_ADMIN_LISTEN=0.0.0.0:9091
EXPOSE 8080 9091
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9091/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/sting-proxy"]
CMD ["serve", "--config", "/etc/sting-proxy/sting-proxy.toml"]
