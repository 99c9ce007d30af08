# Every build and test of vigil needs the duckdb_arrow build tag: duckdb-go's
# Arrow interface (bulk telemetry append) exists only with it. Use these
# targets, or pass $(TAGS) yourself.
GO      ?= go
TAGS    := -tags duckdb_arrow
PKGS    := ./...
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build demo test test-race race test-short bench lint fmt clean

build:
	$(GO) build $(TAGS) -o bin/vigil ./cmd/vigil

demo: build
	./bin/vigil demo

# The README's test command.
test:
	$(GO) test $(TAGS) -count=1 -timeout 15m $(PKGS)

# The race detector over every package (slower; not part of CI's run).
test-race:
	$(GO) test $(TAGS) -race -count=1 -timeout 20m $(PKGS)

# The race detector where goroutines share state — ingest, the gateways,
# the controller, the scoring shards, the HTTP devices — and the server
# tests that drive them; CI runs it after the tests. (The crash and
# broker-loop tests are left to test-race: under the race detector their
# timings stretch past what they wait for.)
race:
	$(GO) test $(TAGS) -race -count=1 -timeout 15m ./ingest ./actions ./api ./gateway/... ./store
	$(GO) test $(TAGS) -race -count=1 -timeout 15m -run 'TestEndToEnd|TestShards|TestNewDefault|TestPerSeries|TestHTTP|TestTLS|TestModel|TestMultivariate|TestClose|TestMetrics' ./server

test-short:
	$(GO) test $(TAGS) -short -count=1 $(PKGS)

bench:
	$(GO) test $(TAGS) -run '^$$' -bench . -benchmem -timeout 30m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(TAGS) $(PKGS)
	$(GO) run $(STATICCHECK) $(TAGS) $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
