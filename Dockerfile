# auth-api and the example upstream, for docker-compose.yml. The filter's .wasm is built on the
# host (`cargo build -p auth-filter --target wasm32-wasip1 --profile wasm`) and mounted into the
# official Envoy image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p auth-api -p echo-upstream

FROM debian:bookworm-slim
# curl: for the compose healthcheck (GET /readyz).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --uid 10001 auth
COPY --from=build /src/target/release/auth-api /src/target/release/echo-upstream /usr/local/bin/
USER auth
WORKDIR /home/auth
EXPOSE 8080 8081 8090
CMD ["auth-api", "serve"]
