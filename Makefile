# Local defaults match the development machines' services (Postgres and Redis on 127.0.0.1).
# Tests use TEST_DATABASE_URL / TEST_REDIS_URL; unset them (make test TEST_DATABASE_URL=)
# to let the tests start containers with testcontainers-go instead.
TEST_DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
export TEST_DATABASE_URL TEST_REDIS_URL

BIN ?= bin

.PHONY: build test test-short check generate migrate lint run clean

build:
	go build -o $(BIN)/ ./cmd/...

test:
	go test -count=1 ./...

test-short:
	go test -count=1 -short ./...

# What CI checks besides the tests: formatting, vet, and generated code being current.
check: lint
	go tool sqlc diff

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

generate:
	go tool sqlc generate

migrate:
	go run ./cmd/migrate up

run: build
	./scripts/run.sh $(BIN)

clean:
	rm -rf $(BIN)

# The benchmark (docs/BENCHMARKS.md). Both create and drop their own database on
# DATABASE_URL's server; neither touches the queue schema of the database it names.
BENCH_FLAGS ?= -runs 3 -ceiling

.PHONY: bench bench-ceiling

bench:
	go run ./cmd/bench $(BENCH_FLAGS)

bench-ceiling:
	./scripts/bench-ceiling.sh

# The full fault suite of internal/faults (make test runs its short mode).
.PHONY: faults
faults:
	FAULTS_FULL=1 go test -count=1 -v -timeout 30m ./internal/faults/

# Brief fuzzing of the hostile-input targets (CI runs it; raise FUZZTIME locally).
FUZZTIME ?= 10s
.PHONY: fuzz
fuzz:
	go test -run '^$$' -fuzz '^FuzzSubmitBody$$' -fuzztime $(FUZZTIME) ./internal/api/
	go test -run '^$$' -fuzz '^FuzzRelPath$$' -fuzztime $(FUZZTIME) ./internal/kinds/
	go test -run '^$$' -fuzz '^FuzzEnqueueArguments$$' -fuzztime $(FUZZTIME) -parallel 1 ./internal/queue/
