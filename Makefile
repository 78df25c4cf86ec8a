# dws — see README.md. Every target works on a fresh clone.
GO        ?= go
PKGS      := ./...
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/dws-gateway/dws/cmd/dws/app.Version=$(VERSION)

.PHONY: run test test-short bench bench-micro soak lint build proto services fuzz clean fleet fleet-stop

## run: a single pod on embedded defaults (in-memory stores, dev keys, 127.0.0.1 only); prints a URL and a token.
## Extra flags: make run RUN_ARGS='--set log.level=debug'. The binary is built, then exec'd: Ctrl+C / SIGTERM reach dws itself (no
## `go run` parent to orphan it) and the recipe's status is dws's.
run:
	$(GO) build -o $(BIN)/dws ./cmd/dws
	exec $(BIN)/dws serve --set server.ws_addr=:8080 --set server.ops_addr=:8081 $(RUN_ARGS)

## build: static binaries in bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/dws ./cmd/dws
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/dws-bench ./cmd/dws-bench

## fleet: the cluster engines on this machine (3-node NATS JetStream, 3-master Redis Cluster, Sentinel; free ports,
## state in /tmp/dws-fleet) and 3 dws pods on them; prints one line of URLs. FLEET_REDIS=sentinel puts the pods on Sentinel.
fleet: build
	@test -x $(BIN)/nats-server || $(GO) build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2
	@bash scripts/fleet.sh start && bash scripts/fleet.sh pods $(or $(FLEET_REDIS),cluster)

## fleet-stop: stop the pods and engines make fleet started
fleet-stop:
	@bash scripts/fleet.sh stop

## services: make sure Redis (127.0.0.1:6379) and NATS JetStream (127.0.0.1:4222) answer
services:
	@bash scripts/services.sh

## test: lint, then every test with the race detector (starts Redis/NATS if needed).
## -p 1: one package at a time; the load-scenario and fault tests measure
## timing on a 2-core machine and must not compete with each other.
test: services lint
	$(GO) test -race -count=1 -p 1 -timeout 15m $(PKGS)
	bash scripts/browser-resume-check.sh

## test-short: the same without the race detector
test-short: services
	$(GO) test -count=1 -p 1 -timeout 15m $(PKGS)
	bash scripts/browser-resume-check.sh

## lint: gofmt + go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## bench-micro: hot-path micro benchmarks (codec, reactor, session)
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./codec/ ./reactor/ ./session/

## fuzz: run each fuzz target briefly
fuzz:
	@for t in FuzzParseRequest FuzzDecodeHeader FuzzDecodeClientMessage FuzzUTF8Validator FuzzParseSince; do \
	  $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime 20s ./codec/ || exit 1; done
	$(GO) test -run '^$$' -fuzz '^FuzzOpsMintBody$$' -fuzztime 20s ./cmd/dws/app/

clean:
	rm -rf $(BIN)

## proto: regenerate the gRPC stubs (needs protoc: apt-get install protobuf-compiler)
proto:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" $(GO) generate ./bridge/forwardpb

## bench: the load suite on embedded defaults: floor at issue 12's shape (19 000 sockets; asserts dws/floor ratios only, never milliseconds), fanout (loss, order; its p99 is reported, not asserted), slow, soak; reports in bench-out/ (untracked)
bench: build
	@ulimit -n 20000; \
	export DWS_AUTH_TOKEN_AES_KEY=$${DWS_AUTH_TOKEN_AES_KEY:-$$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')}; \
	export DWS_AUTH_API_KEY=$${DWS_AUTH_API_KEY:-bench-key}; rc=0; \
	$(BIN)/dws-bench floor --spawn-server $(BIN)/dws -n 19000 --groups 100 --procs 2 --rate 200 --duration 30s --sweep 300,400,500 --sweep-step 5s --out bench-out/floor || rc=1; \
	$(BIN)/dws-bench fanout --spawn-server $(BIN)/dws -n 5000 --groups 50 --rates 25,50,100,200 --step 5s --half 10s --assert-p99 -1ms --out bench-out/suite-fanout || rc=1; \
	$(BIN)/dws-bench slow --spawn-server $(BIN)/dws --hold 15s --out bench-out/suite-slow || rc=1; \
	$(BIN)/dws-bench soak --spawn-server $(BIN)/dws -n 5000 --duration 30s --assert-rss-drift-pct 25 --out bench-out/suite-soak || rc=1; \
	exit $$rc

## soak: 30 minutes at 15 000 sockets with churn and steady publishing; perf/soak-<date>
soak: build
	@ulimit -n 20000; \
	export DWS_AUTH_TOKEN_AES_KEY=$${DWS_AUTH_TOKEN_AES_KEY:-$$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')}; \
	export DWS_AUTH_API_KEY=$${DWS_AUTH_API_KEY:-bench-key}; \
	$(BIN)/dws-bench soak --spawn-server $(BIN)/dws -n 15000 --procs 2 --rate 100 --churn 10 --duration 30m
