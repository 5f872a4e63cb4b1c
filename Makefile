# The two commands a fresh machine needs: `make run` and `make test`.
.PHONY: run test lint doc bench fmt

CARGO ?= cargo

## The gateway on SQLite (port 3001) in front of the mock upstream (127.0.0.1:8080), with a demo group.
run:
	scripts/run.sh

## Every test of the workspace: unit, integration, example and doc tests.
test:
	$(CARGO) test --workspace --all-targets --all-features
	$(CARGO) test --workspace --doc --all-features
	scripts/smoke.sh

## Formatting, clippy with warnings as errors, and docs without missing-docs warnings.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p gpt-load-tower

doc:
	$(CARGO) doc --no-deps -p gpt-load-tower --open

## In-process criterion benchmarks of the library (ns per request through the stack, key selection).
bench:
	$(CARGO) bench -p gpt-load-tower

fmt:
	$(CARGO) fmt --all
