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

# Hook for the end-to-end suite: real clients against a real `berth serve`
# (BERTH_BIN names the built binary). It installs the missing clients with
# scripts/install-clients.sh first, and runs only once test/e2e holds tests.
E2E_FLAGS ?= -timeout 30m
test-e2e: build ## end-to-end tests in test/e2e with real clients (skipped while there are none)
	@if [ -z "$$(find test/e2e -name '*_test.go' 2>/dev/null)" ]; then \
		echo "test-e2e: no tests in test/e2e yet, skipped"; exit 0; \
	fi; \
	if [ -x scripts/install-clients.sh ]; then ./scripts/install-clients.sh; fi; \
	echo "$(GO) test -count=1 $(E2E_FLAGS) ./test/e2e/..."; \
	BERTH_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 $(E2E_FLAGS) ./test/e2e/...

bench: build ## run the benchmark command in test/bench against bin/berth
	@if [ ! -d test/bench ]; then \
		echo "bench: test/bench does not exist yet; nothing to run" >&2; exit 1; \
	fi
	BERTH_BIN=$(CURDIR)/$(BIN) $(GO) run ./test/bench

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
