#!/usr/bin/env bash
# Fuzzes every target for a bounded time (FUZZ_SECONDS each, 15 by default: 14 targets,
# 3.5 minutes) from the seeds in fuzz/corpus/, and fails on any crash, panic, leak or
# timeout. Installs cargo-fuzz if missing. The toolchain is stable: RUSTC_BOOTSTRAP=1 lets
# it take the -Z flags cargo-fuzz passes (sanitizer, coverage), as the armv7 build does.
# Inputs found while running go to target/fuzz-corpus/, never into the repository.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-15}
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz

echo "== cargo fuzz build (AddressSanitizer)"
cargo fuzz build

found=()
for target in $(cargo fuzz list); do
  work="target/fuzz-corpus/$target"
  mkdir -p "$work" "artifacts/$target"
  echo "== fuzz $target for ${seconds}s"
  # -timeout: one input taking over 5 s is a hang; -rss_limit_mb: a parser allocating
  # without bound on a small input is a bug too. Seeds (read-only here) come second.
  if ! cargo fuzz run "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    >"target/fuzz-$target.log" 2>&1; then
    found+=("$target")
    tail -n 40 "target/fuzz-$target.log" >&2
  fi
  grep -E '^Done' "target/fuzz-$target.log" || true
done

if [ ${#found[@]} -gt 0 ]; then
  echo "fuzz: crash, panic or timeout in: ${found[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${seconds}s each, nothing found"
