# syntax=docker/dockerfile:1
# auth-api, the example upstream and the filter's .wasm, each a target of this file:
#
#   docker build -t auth-api .                    # auth-api alone on distroless (the default
#                                                 # target, `runtime`): docker-compose.yml and
#                                                 # Kubernetes (deploy/kubernetes) alike
#   docker build --target echo-upstream -t echo-upstream .   # the example upstream, its own
#                                                 # image: it echoes request headers back,
#                                                 # Authorization included, so never beside auth-api
#   docker build --target wasm -o type=local,dest=out .   # out/plugin.wasm
#   docker build --target wasm -t <registry>/auth-filter:<tag> .   # a Wasm image (compat variant)
#
# The Wasm image built here carries the builder's platform (linux/arm64 on an arm64 machine; the
# .wasm is the same bytes), and buildx pushes it inside an index with its provenance. Istio
# resolves an index by linux/amd64 and then finds nothing: for Istio and Envoy Gateway push the
# image of `cargo xtask wasm-image` (platform wasm/wasip1, no index), or build this one with
# `--platform linux/amd64 --provenance=false`.
#
# The .wasm is built reproducibly: a pinned toolchain, --locked dependencies, and the build's
# paths remapped so that none of this machine's is compiled in; the same source gives the same
# bytes here as on the host with the same flags. `cargo xtask wasm-image` packages it as an OCI
# image without Docker, reproducibly too. docker-compose.yml mounts the host's build instead.

# The toolchain, pinned by version (Rust, and Debian's release for the C compiler that builds
# ring and SQLite). For bit-for-bit rebuilds across time, pin it by digest as well
# (`rust:1.95.0-slim-bookworm@sha256:…`): a tag is rebuilt when Debian updates gcc.
FROM rust:1.95.0-slim-bookworm AS toolchain
WORKDIR /src

# BuildKit caches the registry and the target directory between builds (a change to the
# sources rebuilds the workspace's crates, not every dependency). The cache is not part of the
# image: the binaries are copied out of it in the same step.
FROM toolchain AS build
COPY . .
RUN --mount=type=cache,id=cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=target-release,target=/src/target,sharing=locked \
    cargo build --release --locked -p auth-api -p echo-upstream \
 && mkdir /out && cp target/release/auth-api target/release/echo-upstream /out/

FROM toolchain AS wasm-build
RUN rustup target add wasm32-wasip1
COPY . .
# Paths of the build end up in panic locations: the registry's sources (/usr/local/cargo here,
# ~/.cargo on a host) and the workspace (/src here: the identity, but a host build maps its
# checkout to the same name, so both give the same bytes). RUSTFLAGS reaches the .wasm's crates
# only (with --target, build scripts and proc macros are not affected), and the workspace sets
# no rustflags of its own that it would replace. SOURCE_DATE_EPOCH does not change the .wasm;
# BuildKit uses it for the image's timestamps (README: pushing the wasm image).
ARG SOURCE_DATE_EPOCH=0
ENV RUSTFLAGS="--remap-path-prefix=/src=/src --remap-path-prefix=/usr/local/cargo=/cargo"
RUN --mount=type=cache,id=cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=target-wasm,target=/src/target,sharing=locked \
    cargo build --locked -p auth-filter --target wasm32-wasip1 --profile wasm \
 && cp target/wasm32-wasip1/wasm/auth_filter.wasm /plugin.wasm

# The .wasm alone, as /plugin.wasm: what Istio's and Envoy Gateway's Wasm image fetchers look for
# in a single-layer image.
FROM scratch AS wasm
COPY --from=wasm-build /plugin.wasm /plugin.wasm

# The example upstream of docker-compose.yml and overlays/routes: an echo of each request,
# identity headers and Authorization included, to try the gateway with. Its own image, so that
# the production one does not ship it.
FROM gcr.io/distroless/cc-debian12:nonroot AS echo-upstream
COPY --from=build /out/echo-upstream /usr/local/bin/
USER 10001:10001
EXPOSE 8090
CMD ["/usr/local/bin/echo-upstream", "0.0.0.0:8090"]

# glibc, libgcc and CA certificates, no shell, no package manager. The kubelet probes /healthz
# and /readyz itself; docker-compose.yml's healthcheck runs `auth-api healthcheck`, which GETs
# /readyz without a shell or curl. The last stage: what `docker build .` builds.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/auth-api /usr/local/bin/
# The uid deploy/kubernetes runs as (runAsUser 10001); numeric, so no passwd entry is needed.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8081 50051
CMD ["/usr/local/bin/auth-api", "serve"]
