# The two commands a fresh machine needs: `make run` and `make test` (see README).
GO      ?= go
export PATH := /usr/local/go/bin:$(PATH)
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: build run test bench chaos sim screenshots deps-test images

# The Dockerfile's targets (README, "Deploy"); `make image-comfyui` builds one, `make images` all.
IMAGE_TARGETS := api base comfyui browser unified
IMAGE         ?= machine
.PHONY: $(addprefix image-,$(IMAGE_TARGETS))

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/machine ./cmd/machine

## run: the machine with an embedded broker and 2 simulated GPUs (or HUB_REDIS_URL etc. when set)
run: build
	./bin/machine

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

## test: installs redis-server when missing, then vet, staticcheck (pinned; any finding fails),
## every test (with the race detector),
## a short run of each fuzz target (counted in executions: a timed run of a target that talks to
## Redis can end in a spurious "context deadline exceeded"), and the quick chaos scenarios
test: deps-test
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -race -count=1 ./...
	cd third_party/bubbletea && $(GO) test -race -count=1 .
	$(GO) test -run '^$$' -fuzz '^FuzzFromHash$$' -fuzztime 200000x ./core/job
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime 50000x ./core/config
	$(GO) test -run '^$$' -fuzz '^FuzzMatching$$' -fuzztime 20000x ./core/broker

## bench: end-to-end figures against a real redis-server (latency, throughput, RSS)
bench: deps-test build
	$(GO) run ./cmd/bench -machine bin/machine

## chaos: fault scenarios against real redis-server and machine processes, counted per job
chaos: deps-test build
	$(GO) run ./cmd/chaos -machine bin/machine

## sim: every simulator scenario (fleets of machine cores against a real redis-server)
sim: deps-test
	$(GO) run ./cmd/sim

## screenshots: PNGs of the console's screens, from a real in-process machine
screenshots:
	$(GO) run ./cmd/screenshots -out screenshots

## image-<target>: one target of the Dockerfile (api, base, comfyui, browser, unified), tagged $(IMAGE):<target>
$(addprefix image-,$(IMAGE_TARGETS)): image-%:
	docker build --target $* --build-arg VERSION=$(VERSION) -t $(IMAGE):$* .

## images: every target, with docker buildx bake (docker-bake.hcl)
images:
	VERSION=$(VERSION) docker buildx bake all

deps-test:
	@command -v redis-server >/dev/null 2>&1 && command -v redis-sentinel >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || { \
		echo "installing redis-server, redis-sentinel and chromium (tests start their own instances)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server redis-sentinel chromium >/dev/null; }
	@test -f .cache/p5/p5.min.js || { echo "fetching p5.js for the browser connector's p5 test (npm pack p5)"; \
		mkdir -p .cache/p5 && cd .cache/p5 && npm pack p5@2.3.4 --silent >/dev/null && \
		tar xzf p5-2.3.4.tgz package/lib/p5.min.js && mv package/lib/p5.min.js . && rm -rf package p5-2.3.4.tgz; }
