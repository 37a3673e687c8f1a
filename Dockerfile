# syntax=docker/dockerfile:1
# machine: one image per GPU box. Build: docker build -t machine .
# Run:   docker run -d --name machine -e HUB_REDIS_URL=redis://… -e WORKER_CONNECTORS=simulation \
#          --stop-timeout 90 -p 9090:9090 machine
# (--stop-timeout must exceed MACHINE_DRAIN_TIMEOUT, 60 s by default, so in-flight jobs can finish.)

# ---- builder: Go with cgo (the NVML source needs it) ----
FROM golang:1.26-bookworm AS builder
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/machine ./cmd/machine

# ---- runtime: slim Debian, the binary, nothing else ----
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/machine /usr/local/bin/machine
# `docker exec -it <container> console` attaches the console to the running core.
RUN ln -s /usr/local/bin/machine /usr/local/bin/console
WORKDIR /workspace
# Every interface: a published port (-p 9090:9090) reaches the container's interface, not its
# loopback. Only read-only routes are open; set MACHINE_API_TOKEN to open restarts and logs.
ENV MACHINE_HEALTH_PORT=9090 \
    MACHINE_HTTP_ADDR=0.0.0.0 \
    MACHINE_RUN_DIR=/run/machine
EXPOSE 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["/usr/local/bin/machine", "health"]
ENTRYPOINT ["/usr/local/bin/machine"]
CMD ["--no-tui"]
