# berth — `make help` lists the targets.

GO      ?= go
BIN     := bin/berth
# The version stamped into the binary; "dev" outside a git checkout.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

STATICCHECK_VERSION := 0.8.2
GOBIN_DIR   := $(or $(shell $(GO) env GOBIN),$(firstword $(subst :, ,$(shell $(GO) env GOPATH)))/bin)
STATICCHECK := $(GOBIN_DIR)/staticcheck

# Go files of the repository, without build output and caches.
GO_FILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path './bin/*' -not -path './data/*' -not -path './.cache/*')
# Unit suites: every package except the end-to-end ones under test/.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '/test/')

.DEFAULT_GOAL := help
.PHONY: help build run test test-unit test-e2e bench lint fmt-check vet staticcheck tools clean

help: ## list the targets
	@echo "usage: make <target>"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build a static bin/berth (version from git describe)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/berth

run: build ## build, then run a one-node registry on :5000 with its data in ./data
	./$(BIN) serve $(ARGS)

test: lint test-unit test-e2e ## everything CI runs: lint, unit tests with -race, end-to-end tests

test-unit: ## unit tests with the race detector (all packages but test/...)
	CGO_ENABLED=1 $(GO) test -race -count=1 $(UNIT_PKGS)

# The end-to-end suite: the OCI conformance suite, real clients and crash
# tests against a real `berth serve` (E2E_BERTH_BIN names the built binary).
# scripts/install-clients.sh installs the clients that are missing first.
E2E_FLAGS ?= -timeout 30m
test-e2e: build ## conformance suite, real clients and kill -9 tests against bin/berth
	./scripts/install-clients.sh
	E2E_BERTH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 $(E2E_FLAGS) ./test/e2e/...

DISTRIBUTION_VERSION := v3.1.2
BENCH_ARGS ?=
bench: build ## berth vs distribution side by side, replication vs skopeo sync, then a 3-node cluster: push and failover (~10 min; BENCH_ARGS=-quick)
	@if [ ! -x "$(GOBIN_DIR)/registry" ]; then \
		echo "installing distribution $(DISTRIBUTION_VERSION) into $(GOBIN_DIR)"; \
		GOFLAGS= $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(DISTRIBUTION_VERSION); \
	fi
	@command -v skopeo >/dev/null 2>&1 || { echo "installing skopeo (Debian) for the replication comparison"; \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get -o DPkg::Lock::Timeout=600 install -y skopeo; }
	$(GO) run ./test/bench -berth $(CURDIR)/$(BIN) -distribution $(GOBIN_DIR)/registry $(BENCH_ARGS)

# The scratch image of bin/berth (Dockerfile). The two empty directories are
# made here, with their modes, because the build has no shell to make them.
IMAGE ?= berth:dev
# The compose CLI: the `docker compose` plugin where it exists, else the
# standalone docker-compose.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
.PHONY: image cluster-up cluster-down chaos

image: build ## build the scratch image berth:dev (IMAGE=name:tag to rename) holding bin/berth
	rm -rf bin/image && mkdir -p bin/image/data bin/image/tmp
	chmod 0700 bin/image/data && chmod 1777 bin/image/tmp
	docker build -t $(IMAGE) .

cluster-up: image ## run a three-node cluster in Docker (deploy/compose) and wait until it is ready
	COMPOSE='$(COMPOSE)' BERTH_IMAGE=$(IMAGE) deploy/compose/cluster.sh up

cluster-down: ## stop the compose cluster; its volumes stay (ARGS=-v removes them)
	COMPOSE='$(COMPOSE)' BERTH_IMAGE=$(IMAGE) deploy/compose/cluster.sh down $(ARGS)

# Kills, freezes and partitions a minority of a cluster of $(IMAGE)
# containers under load, then checks that nothing acknowledged was lost
# (test/chaos); then TestRegions: a replication chain of three regions and a
# dual-master pair, partitioned and killed, checked for convergence.
# CHAOS_NODES (3), CHAOS_DURATION (3m of faults), CHAOS_REGIONS_DURATION (2m)
# and CHAOS_SEED (replays a schedule) tune it; bin/chaos/ keeps the report and
# the container logs. Not part of `make test`.
CHAOS_FLAGS ?= -timeout 20m
chaos: image ## kill, pause and partition a Docker cluster under load; check nothing acknowledged is lost
	CHAOS_IMAGE=$(IMAGE) CHAOS_ARTIFACTS=$(CURDIR)/bin/chaos $(GO) test -count=1 -v $(CHAOS_FLAGS) ./test/chaos/...

lint: fmt-check vet staticcheck ## gofmt, go vet and staticcheck

fmt-check:
	@files="$$(gofmt -l $(GO_FILES))"; \
	if [ -n "$$files" ]; then echo "gofmt: these files need formatting (run gofmt -w):"; echo "$$files"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck: tools
	$(STATICCHECK) ./...

tools: ## install the pinned tools that are missing (staticcheck)
	@if ! "$(STATICCHECK)" -version 2>/dev/null | grep -q '($(STATICCHECK_VERSION))'; then \
		echo "installing staticcheck v$(STATICCHECK_VERSION) into $(GOBIN_DIR)"; \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@v$(STATICCHECK_VERSION); \
	fi

clean: ## remove build output (bin/); ./data is left alone
	rm -rf bin
