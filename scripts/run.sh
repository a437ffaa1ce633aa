#!/usr/bin/env bash
# scripts/run.sh - the demo: installs what is missing, builds, starts
# marketo-sim (an offline Marketo with 10,000 leads), a Redis, and
# marketo-gateway in front of them (shared mode, as in Kubernetes), prints a
# curl line to paste, and runs until Ctrl-C.
#
#   scripts/run.sh              sim + Redis + gateway
#   scripts/run.sh --no-redis   sim + gateway, in-process cache and limiter
#
# Ports: GATEWAY_PORT (8080), SIM_PORT (8081), REDIS_PORT (6390). Everything
# listens on 127.0.0.1.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

gw_port=${GATEWAY_PORT:-8080}
sim_port=${SIM_PORT:-8081}
user_id=demo_user_1
enc_key=demo-encryption-key
api_key=demo-key
redis_port=${REDIS_PORT:-6390}
use_redis=1
for a in "$@"; do
  case "$a" in
    --no-redis) use_redis=0 ;;
    *) echo "usage: $0 [--no-redis]" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh run
# its own release build dir, so it never changes the test build's options
if [ ! -f build-release/build.ninja ]; then
  meson setup build-release -Dbuildtype=release -Dtests=false >/dev/null
fi
ninja -C build-release >/dev/null

run=$(mktemp -d /tmp/marketo-gateway-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT INT TERM

build-release/sim/marketo-sim --listen "127.0.0.1:$sim_port" --user-id "$user_id" \
  --encryption-key "$enc_key" --leads 10000 >"$run/sim.out" 2>"$run/sim.log" &
pids+=($!)

redis_url=""
if [ "$use_redis" = 1 ]; then
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$run" >"$run/redis.log" 2>&1 &
  pids+=($!)
  redis_url="redis://127.0.0.1:$redis_port/0"
fi

cat >"$run/gateway.ini" <<INI
[marketo]
soap_endpoint = http://127.0.0.1:$sim_port/soap/mktows/2_3
user_id = $user_id
encryption_key = $enc_key

[gateway]
listen = 127.0.0.1:$gw_port

[auth]
api_keys = $api_key

[cursor]
secret = demo-cursor-secret

[redis]
url = $redis_url
INI
build-release/gateway/marketo-gateway --config "$run/gateway.ini" >"$run/gateway.out" 2>"$run/gateway.log" &
pids+=($!)

# Wait until the gateway says it is ready (sim up, upstream configured).
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$gw_port/readyz" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
if [ -z "${ready:-}" ]; then
  echo "the gateway did not become ready; its log:" >&2
  tail -20 "$run/gateway.log" "$run/sim.log" >&2
  exit 1
fi

cat <<TXT
marketo-sim     http://127.0.0.1:$sim_port/soap/mktows/2_3  (10,000 leads, logs: $run/sim.log)
marketo-gateway http://127.0.0.1:$gw_port                    (API key: $api_key, logs: $run/gateway.log)
redis           ${redis_url:-(none: in-process cache and limiter)}

Paste this:
  curl -s -H 'Authorization: Bearer $api_key' 'http://127.0.0.1:$gw_port/leads?email=joe@marketo.com,lead42@example.com&fields=FirstName,Company,LeadScore'

More: /leads?staticList=Demo.All&limit=5, POST /leads/sync, /openapi.json, /metrics.
Ctrl-C stops everything.
TXT
wait -n "${pids[@]}"
echo "a process exited; stopping" >&2
