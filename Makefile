# The two commands a fresh machine needs: `make run` and `make test`.
.PHONY: run test lint doc bench bench-lib fmt

CARGO ?= cargo

## The gateway on SQLite (port 3001) in front of the mock upstream (127.0.0.1:8080), with a demo group.
run:
	scripts/run.sh

## Every test of the workspace: unit, integration, example and doc tests.
test:
	$(CARGO) test --workspace --all-targets --all-features
	$(CARGO) test --workspace --doc --all-features
	scripts/smoke.sh
	scripts/console-e2e.sh

## Formatting, clippy with warnings as errors, and docs without missing-docs warnings.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	# SQLite alone, the smallest build the README offers.
	$(CARGO) clippy -p gpt-load-gateway --no-default-features --features sqlite -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p gpt-load-tower

doc:
	$(CARGO) doc --no-deps -p gpt-load-tower --open

## The loopback benchmark: the gateway against nginx and direct to the mock upstream, one table in
## bench/results/latest.md (see bench/README.md; BENCH_QUICK=1 for a short smoke run).
bench:
	bench/run.sh

## In-process criterion benchmarks of the library (ns per request through the stack, key selection).
bench-lib:
	$(CARGO) bench -p gpt-load-tower

fmt:
	$(CARGO) fmt --all
