#!/usr/bin/env bash
# Instructions the agent executes per lookup, counted by callgrind: a
# figure that does not depend on the machine's load (unlike req/s).
#
#   bench/scripts/callgrind-lookup.sh [SHOAL_BIN] [REQUESTS]
#
# Starts three agents (the first under callgrind, with instrumentation
# off), registers `web` on each, writes a 2 KiB KV value and a flag, then
# for each lookup sends 200 warm-up requests, switches instrumentation on,
# sends REQUESTS more on one keep-alive connection, switches it off, and
# prints instructions per request. The count includes whatever gossip the
# agent does meanwhile (a few messages a second; negligible next to
# REQUESTS lookups). Needs valgrind, curl and python3.
set -euo pipefail
bin=$(realpath "${1:-target/release/shoal}")
requests=${2:-2000}
work=$(mktemp -d /tmp/shoal-callgrind.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=() gossip=()
for i in 0 1 2; do api+=("$(port)"); gossip+=("$(port)"); done
for i in 0 1 2; do
    args=(agent --node "cg$i" --bind "127.0.0.1:${gossip[$i]}" --http-addr "127.0.0.1:${api[$i]}"
          --data-dir "$work/d$i" --log-level warn)
    [ "$i" = 0 ] || args+=(--join "127.0.0.1:${gossip[0]}")
    if [ "$i" = 0 ]; then
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.%p" \
            "$bin" "${args[@]}" >"$work/log$i" 2>&1 &
    else
        "$bin" "${args[@]}" >"$work/log$i" 2>&1 &
    fi
    pids+=($!)
done
until curl -sf "http://127.0.0.1:${api[0]}/health/live" >/dev/null; do sleep 0.5; done
for i in 0 1 2; do
    until curl -sf -X PUT "http://127.0.0.1:${api[$i]}/v1/agent/service/register" \
        -d "{\"Name\":\"web\",\"ID\":\"web-$i\",\"Port\":8080,\"Tags\":[\"v1\"]}" >/dev/null; do sleep 0.5; done
done
python3 -c 'print("".join(chr(97 + i % 26) for i in range(2048)), end="")' >"$work/value"
curl -sf -X PUT "http://127.0.0.1:${api[0]}/v1/kv/bench/value" --data-binary @"$work/value" >/dev/null
curl -sf -X PUT "http://127.0.0.1:${api[0]}/v1/flags/bench-flag" -d '{"enabled":true,"rollout_percentage":50}' >/dev/null
until [ "$(curl -sf "http://127.0.0.1:${api[0]}/v1/health/service/web?passing" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 3 ]; do sleep 0.5; done
sleep 8 # past the agent's start-up trim (resident.rs)

send() { # path count
    python3 - "${api[0]}" "$1" "$2" <<'PY'
import http.client, sys
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
size = 0
for _ in range(count):
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, (response.status, body)
    size = len(body)
print(size)
PY
}
vg=${pids[0]}
printf '%-34s %8s %14s %16s\n' lookup bytes instructions per-request
for path in "/v1/health/service/web?passing" "/v1/kv/bench/value?raw" "/v1/flags/bench-flag?user=u-1234"; do
    send "$path" 200 >/dev/null
    rm -f "$work"/cg.*.[0-9]*
    callgrind_control -z "$vg" >/dev/null
    callgrind_control -i on "$vg" >/dev/null
    size=$(send "$path" "$requests")
    callgrind_control -i off "$vg" >/dev/null
    callgrind_control -d "$vg" >/dev/null
    sleep 1
    dump=$(ls -t "$work"/cg.* | head -1)
    total=$(awk '/^totals:/ {print $2; exit}' "$dump")
    printf '%-34s %8s %14s %16.0f\n' "$path" "$size" "$total" "$(echo "$total / $requests" | bc -l)"
done
