# syntax=docker/dockerfile:1
#
# Gleaner's image: one static binary on an empty base, with a CA bundle (object_store's cloud
# clients verify TLS against it) and a passwd entry for the non-root user. No shell, no
# package manager, nothing else. image/build-rootfs.sh builds the same root filesystem without
# a Docker engine, and tests/image/run.sh tests it (see image/README.md).
#
#   docker build -t ghcr.io/gleaner-dev/gleaner:0.1.0 .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# The commit, for `gleaner --version` and gleaner_build_info (the context has no .git):
#   docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD) .
ARG REVISION=unknown
ENV GLEANER_BUILD_COMMIT=${REVISION}
WORKDIR /src
COPY . .
# A static-pie binary on the gnu target (musl's std is not needed); the `dist` profile is
# optimised and stripped.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --locked --profile dist --target x86_64-unknown-linux-gnu -p sidecar \
 && cp target/x86_64-unknown-linux-gnu/dist/gleaner /gleaner

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gleaner" \
      org.opencontainers.image.description="Collects new text files from a directory, reduces them to small results, ships them to object storage, never loses or repeats a file" \
      org.opencontainers.image.source="https://github.com/gleaner-dev/gleaner" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# The rust image is Debian with ca-certificates installed: its bundle is the one Debian ships.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY image/passwd /etc/passwd
COPY image/group /etc/group
COPY --from=build /gleaner /usr/local/bin/gleaner
USER 65532:65532
# Serve /metrics and the probes on every interface of the container, so that a published port
# (`docker run -p 9464:9464`) answers; the binary's own default, outside the image, stays
# 127.0.0.1:9464. `--metrics-addr` or this variable, set again, overrides it.
ENV GLEANER_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/gleaner"]
CMD ["--help"]
