# Control plane image (also runs the demo upstream: `tollgate demo-upstream`).
# Build context: the repository root (see envoy/docker-compose.yml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p tollgate-control-plane \
 && cp target/release/tollgate /usr/local/bin/tollgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/tollgate /usr/local/bin/tollgate
VOLUME /var/lib/tollgate
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/tollgate"]
