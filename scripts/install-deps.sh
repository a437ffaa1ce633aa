#!/usr/bin/env bash
# scripts/install-deps.sh [build|run|test|all] - installs whatever is missing.
# Idempotent and quiet when everything is there; needs root (or sudo) only
# when something must be installed. Never asks a question (CI has no stdin).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/deps.sh"

want=""
for what in "${@:-all}"; do
  case "$what" in
    build) want="$want $DEPS_BUILD" ;;
    run)   want="$want $DEPS_BUILD $DEPS_RUN" ;;
    test)  want="$want $DEPS_BUILD $DEPS_TEST" ;;
    all)   want="$want $DEPS_BUILD $DEPS_RUN $DEPS_TEST" ;;
    *) echo "usage: $0 [build|run|test|all]" >&2; exit 2 ;;
  esac
done

missing=()
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    case " ${missing[*]-} " in *" $p "*) ;; *) missing+=("$p") ;; esac
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >&2
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
