#!/usr/bin/env bash
# The project's one test entry point: what CI runs and what a developer runs before pushing.
# Installs system packages it needs, then: format, lints, the whole test suite, docs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# A one-shot build gains nothing from incremental caches; they double the target's size.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi

echo "== cargo fmt";    cargo fmt --all --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests";        cargo nextest run --workspace --all-targets --locked --no-fail-fast
echo "== doctests";     cargo test --workspace --doc --locked
echo "== deploy";       bash scripts/deploy-check.sh
echo "== docs";         RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked
echo "== all green"
