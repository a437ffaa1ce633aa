#!/usr/bin/env bash
# scripts/test.sh - installs what is missing, builds, and runs every suite:
#   1. C unit and black-box suites (cmocka, via meson test) on a normal build,
#   2. the HTTP end-to-end suites (pytest) against the built gateway and sim,
#   3. both again on an AddressSanitizer + UBSan build.
# Ends with one line "N passed, N failed, N skipped" summed over all of them;
# exits non-zero if anything failed. A case that did not run is counted as
# skipped one by one (tests/expected-cases.txt says how many each program and
# module runs); with --strict, or CI=true, a case that did not run fails the
# run: CI has ../shared and Redis, so nothing may skip there.
#
#   scripts/test.sh            everything (what .ci/run runs)
#   scripts/test.sh --no-asan  skip stage 3 (quicker local runs)
#   scripts/test.sh --strict   nothing may skip (the default when CI=true)
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

asan=1
strict=()
[ "${CI:-}" = true ] && strict=(--strict)
for a in "$@"; do
  case "$a" in
    --no-asan) asan=0 ;;
    --strict) strict=(--strict) ;;
    *) echo "usage: $0 [--no-asan] [--strict]" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh test || exit 1
# The manifest checks use node and the npm package kubernetes-models (lockfile
# in tests/deploy). Debian's nodejs/npm only when no node is installed at all.
if ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >&2 || exit 1
fi
# (again when the lockfile is newer than what npm ci last installed)
if [ ! -d tests/deploy/node_modules ] ||
   [ tests/deploy/package-lock.json -nt tests/deploy/node_modules/.package-lock.json ]; then
  (cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error) >&2 || exit 1
fi

PY=/usr/bin/python3
export MKTO_SHARED_DIR="${MKTO_SHARED_DIR:-$top/../shared/marketo}"
results=()
out="$top/build-test-results"
rm -rf "$out"; mkdir -p "$out"

# configure_build DIR [meson options...]: set up (or reconfigure) and compile.
configure_build() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$out/$(basename "$dir")-setup.log" 2>&1 ||
      { cat "$out/$(basename "$dir")-setup.log"; return 1; }
  fi
  ninja -C "$dir" >"$out/$(basename "$dir")-build.log" 2>&1 ||
    { tail -50 "$out/$(basename "$dir")-build.log"; return 1; }
}

# run_suites DIR LABEL PYTEST-PATHS...: meson test, then pytest, recording
# both result files and both exit statuses.
run_suites() {
  local dir=$1 label=$2 rc
  shift 2
  echo "== $label: C suites (meson test)"
  meson test -C "$dir" --print-errorlogs --no-rebuild >"$out/$label-meson.log" 2>&1
  rc=$?
  tail -8 "$out/$label-meson.log"
  cp "$dir/meson-logs/testlog.json" "$out/$label-meson.json" 2>/dev/null
  results+=("$label/c=$out/$label-meson.json@$rc")

  echo "== $label: HTTP suites (pytest)"
  # Every test has a deadline (pytest-timeout), so no failure can hang the
  # stage; the outer timeout only guards pytest itself.
  GATEWAY_BIN="$top/$dir/gateway/marketo-gateway" SIM_BIN="$top/$dir/sim/marketo-sim" \
    timeout 2400 "$PY" -m pytest -q -p no:cacheprovider -o faulthandler_timeout=300 \
    --timeout=300 --durations=15 --junitxml="$out/$label-pytest.xml" \
    "$@" >"$out/$label-pytest.log" 2>&1
  rc=$?
  tail -15 "$out/$label-pytest.log"
  results+=("$label/http=$out/$label-pytest.xml@$rc")
}

if configure_build build; then
  # the static deploy checks build nothing: once, here
  run_suites build plain tests/server tests/integration tests/redis_e2e tests/deploy
else
  echo "build failed"; results+=("plain/build=$out/missing.json")
fi

if [ "$asan" = 1 ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  export LSAN_OPTIONS="suppressions=$top/tests/lsan.supp:print_suppressions=0"
  if configure_build build-asan -Db_sanitize=address,undefined -Db_lundef=false \
       -Dbuildtype=debug; then
    # resident-memory bounds (marker rss) mean nothing under ASan's quarantine
    run_suites build-asan asan -m "not rss" tests/server tests/integration tests/redis_e2e
  else
    echo "asan build failed"; results+=("asan/build=$out/missing.json")
  fi
fi

echo "== summary"
"$PY" scripts/summarize.py "${strict[@]}" --expect tests/expected-cases.txt "${results[@]}"
