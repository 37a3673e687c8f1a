# syntax=docker/dockerfile:1
# machine: one image for every service combination, built in stages (README, "Deploy"):
#
#   api      slim Debian + the binary, no CUDA: remote-API connectors (openai, replicate, runpod,
#            comfyui-remote), simulation, mock
#   base     + NVIDIA's CUDA runtime (cudart) from NVIDIA's Debian 12 repository
#   comfyui  base + git, Python and ComfyUI at COMFYUI_COMMIT in its venv
#   browser  base + Debian's Chromium, fonts and p5.js
#   unified  everything (the default target)
#
# Build one: docker build --target comfyui -t machine:comfyui .   (or make image-comfyui, or
# docker buildx bake comfyui; docker buildx bake all builds every target).
# Run:   docker run -d --name machine --gpus all -e HUB_REDIS_URL=redis://… -e WORKER_CONNECTORS=comfyui \
#          --stop-timeout 90 -p 9090:9090 machine
# (--stop-timeout must exceed MACHINE_DRAIN_TIMEOUT, 60 s by default, so in-flight jobs can finish.)
#
# Every service layer is installed by the binary itself (`machine install --layer …`), the same
# installers the machine runs at boot and the tests run natively on Debian.
#
# Why Debian and not nvidia/cuda: NVIDIA's CUDA images are Ubuntu, whose chromium is a snap that
# cannot run in a container, and the browser layer is Debian's Chromium. NVIDIA publishes the
# same CUDA packages for Debian 12; the base stage installs the runtime from there, as NVIDIA's
# own "base" images do on Ubuntu. PyTorch's wheels bring their own CUDA libraries.

# Versions, pinned. Override with --build-arg (or the variables of docker-bake.hcl).
ARG GO_VERSION=1.26.7
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG CUDA_VERSION=12-8
ARG COMFYUI_REPO_URL=https://github.com/stakeordie/ComfyUI.git
ARG COMFYUI_BRANCH=master
ARG COMFYUI_COMMIT=3fb07a804f1738b8f8c8b0d535eaccc72a9ddc7b
ARG P5_VERSION=2.3.4
ARG P5_SHA256=af29afdfa8c5d1096fb1335d6160f7b17be12d1eb21e69782f47c57c05893a48

# ---- builder: Go with cgo (the NVML source needs it) ----
FROM golang:${GO_VERSION}-bookworm AS builder
WORKDIR /src
COPY go.mod go.sum ./
# go.mod replaces Bubble Tea with the patched copy in third_party/bubbletea.
COPY third_party/ third_party/
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/machine ./cmd/machine

# ---- runtime: what every target shares: the binary, tini, the machine user and its directories ----
FROM ${DEBIAN_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
# Services run as the unprivileged user machine (uid 1000); Chromium's sandbox needs a non-root user.
RUN groupadd --gid 1000 machine \
 && useradd --uid 1000 --gid machine --create-home --shell /usr/sbin/nologin machine \
 && mkdir -p /workspace/logs /workspace/assets /workspace/.cache/machine /run/machine \
 && chown -R machine:machine /workspace /run/machine
COPY --from=builder /out/machine /usr/local/bin/machine
# `docker exec -it <container> console` attaches the console to the running core.
RUN ln -s /usr/local/bin/machine /usr/local/bin/console
WORKDIR /workspace
# The HTTP server binds every interface: a published port (-p 9090:9090) reaches the container's
# interface, not its loopback. Only read-only routes are open; set MACHINE_API_TOKEN to open
# restarts and logs.
ENV MACHINE_WORKSPACE=/workspace \
    MACHINE_RUN_DIR=/run/machine \
    MACHINE_LOG_DIR=/workspace/logs \
    MACHINE_CACHE_DIR=/workspace/.cache/machine \
    MACHINE_ASSET_DIR=/workspace/assets \
    MACHINE_HEALTH_PORT=9090 \
    MACHINE_HTTP_ADDR=0.0.0.0
EXPOSE 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["/usr/local/bin/machine", "health"]
USER machine
# tini is PID 1: it forwards SIGTERM to the machine (which drains) and reaps the orphans a
# browser or ComfyUI leaves behind.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/machine"]
CMD ["--no-tui"]

# ---- api: no CUDA, no services; for machines whose connectors call remote APIs ----
FROM runtime AS api
LABEL org.opencontainers.image.title="machine (api)"

# ---- base: the CUDA runtime ----
FROM runtime AS base
USER root
ARG CUDA_VERSION
ADD https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb /tmp/cuda-keyring.deb
RUN dpkg -i /tmp/cuda-keyring.deb \
 && rm /tmp/cuda-keyring.deb \
 && apt-get update \
 && apt-get install -y --no-install-recommends cuda-cudart-${CUDA_VERSION} \
 && rm -rf /var/lib/apt/lists/*
# What the NVIDIA container toolkit reads: every GPU, with compute and NVML (utility).
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64 \
    PATH=/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER machine
LABEL org.opencontainers.image.title="machine (base)"

# ---- comfyui: ComfyUI pinned by commit, in its venv; custom nodes and models from the manifest ----
FROM base AS comfyui
USER root
ARG COMFYUI_REPO_URL
ARG COMFYUI_BRANCH
ARG COMFYUI_COMMIT
# The same values at boot: the machine finds the checkout at its commit and installs nothing again.
ENV COMFYUI_DIR=/opt/ComfyUI \
    COMFYUI_REPO_URL=${COMFYUI_REPO_URL} \
    COMFYUI_BRANCH=${COMFYUI_BRANCH} \
    COMFYUI_COMMIT=${COMFYUI_COMMIT} \
    COMFYUI_MANIFEST=/opt/machine/comfyui-manifest.json
# Custom nodes and models listed in deploy/comfyui/manifest.json are baked in; the checked-in one
# is empty, so they install at boot from a manifest mounted at run time (COMFYUI_MANIFEST).
COPY deploy/comfyui/manifest.json /opt/machine/comfyui-manifest.json
RUN PIP_NO_CACHE_DIR=1 machine install --layer comfyui --apt \
 && rm -rf /var/lib/apt/lists/* \
 && chown -R machine:machine /opt/ComfyUI /workspace
USER machine
LABEL org.opencontainers.image.title="machine (comfyui)"

# ---- browser: Debian's Chromium and fonts, p5.js ----
FROM base AS browser
USER root
ARG P5_VERSION
ARG P5_SHA256
ENV PLAYWRIGHT_P5_JS=/opt/machine/p5/p5.min.js
RUN machine install --layer browser --apt \
 && rm -rf /var/lib/apt/lists/*
RUN machine install --layer p5 --from https://registry.npmjs.org/p5/-/p5-${P5_VERSION}.tgz --sha256 ${P5_SHA256} \
 && chown -R machine:machine /opt/machine/p5 /workspace
USER machine
LABEL org.opencontainers.image.title="machine (browser)"

# ---- unified: every connector (the default target) ----
FROM comfyui AS unified
USER root
ARG P5_VERSION
ARG P5_SHA256
ENV PLAYWRIGHT_P5_JS=/opt/machine/p5/p5.min.js
RUN machine install --layer browser --apt \
 && rm -rf /var/lib/apt/lists/*
RUN machine install --layer p5 --from https://registry.npmjs.org/p5/-/p5-${P5_VERSION}.tgz --sha256 ${P5_SHA256} \
 && chown -R machine:machine /opt/machine/p5 /workspace
USER machine
LABEL org.opencontainers.image.title="machine (unified)"
