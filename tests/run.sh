#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs (Deno from npm, Debian
# packages for the NBD clients, Ceph RGW, qemu), runs `deno test`, then (for the whole suite)
# `deno task check` (type check, lint, fmt --check) as one more test, and ends with a plain
# "N passed, N failed" line. Extra arguments go to `deno test` (e.g. a path to run one folder).
set -uo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6
if command -v deno >/dev/null 2>&1 && deno --version 2>/dev/null | grep -q "^deno 2\."; then
  DENO=$(command -v deno)
else
  if [ ! -x .tools/node_modules/@deno/linux-x64-glibc/deno ]; then
    echo "Installing Deno $DENO_VERSION from npm into .tools/ ..."
    npm install --silent --no-audit --no-fund --prefix .tools "deno@$DENO_VERSION" >/dev/null || {
      echo "Cannot install Deno from npm"; echo "0 passed, 1 failed"; exit 1; }
  fi
  DENO=$PWD/.tools/node_modules/@deno/linux-x64-glibc/deno
fi
export PATH="$(dirname "$DENO"):$PATH"

if [ -f tests/install_deps.sh ]; then
  bash tests/install_deps.sh || { echo "Cannot install test dependencies"; echo "0 passed, 1 failed"; exit 1; }
fi

"$DENO" install --quiet >/dev/null 2>&1 || true # fetch npm dependencies into node_modules
log=$(mktemp)
targets=("$@")
whole=0
[ ${#targets[@]} -eq 0 ] && whole=1 && targets=(tests/ src/ bench/)
"$DENO" test -A --no-prompt "${targets[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -1)
passed=$(echo "$summary" | sed -E 's/.*\| ([0-9]+) passed.*/\1/')
failed=$(echo "$summary" | sed -E 's/.*\| ([0-9]+) failed.*/\1/')
rm -f "$log"
if [ -z "$summary" ]; then
  passed=0
  failed=1
  echo "deno test printed no summary (exit $status)"
elif [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1 # a module failed to load or an uncaught error outside any test
fi
if [ "$whole" -eq 1 ]; then
  # The checks CI must keep green count as one test: a type, lint or format error fails the run.
  if "$DENO" task check; then
    echo "deno task check ... ok"
    passed=$((passed + 1))
  else
    echo "deno task check ... FAILED"
    failed=$((failed + 1))
  fi
fi
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
