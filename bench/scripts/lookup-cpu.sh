#!/bin/bash
# Usage: bench/scripts/lookup-cpu.sh SHOAL_BIN LABEL — starts one agent (own
# loopback address), registers 3 instances of `web` and one flag, then runs
# wrk for 10 s (1 thread, 4 connections) on two lookups: a repeated health
# query (`?passing`, answered from the lookup cache) and flag decisions for a
# new `?user=` each time (a cache miss each time). Prints requests/s and
# the agent's CPU time per request (utime + stime from /proc/PID/stat).
# Needs wrk. MEM_IP as in memory-five-ways.sh.
bin=$1; label=$2
ip=${MEM_IP:-127.77.0.1}
api=http://$ip:18500
dir=$(mktemp -d)
$bin agent --dev --data-dir $dir/data --bind $ip:17946 --http-addr $ip:18500 --dns-addr off > $dir/log 2>&1 &
pid=$!
sleep 3
for i in 1 2 3; do
  curl -sf -X PUT $api/v1/agent/service/register -d '{"ID":"web-'$i'","Name":"web","Port":'$((8000 + i))'}' > /dev/null || echo "register $i failed"
done
curl -sf -X PUT $api/v1/kv/_shoal/flags/new-checkout -d '{"enabled":true,"rollout_percentage":25}' > /dev/null || echo "flag write failed"
cat > $dir/users.lua <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/flags/new-checkout?user=u" .. counter)
end
LUA
sleep 2
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
run() { # $1: name, rest: wrk arguments
  local name=$1; shift
  local before after requests
  before=$(cpu)
  requests=$(wrk -t1 -c4 -d10s "$@" 2>&1 | tee $dir/wrk-$name | awk '/requests in/{print $1}')
  after=$(cpu)
  echo "$label $name: $requests requests in 10 s ($(( requests / 10 ))/s), agent CPU $(( (after - before) * 1000 / ticks )) ms, $(awk -v c=$(( after - before )) -v t=$ticks -v r=$requests 'BEGIN{printf "%.1f", c / t * 1e6 / r}') µs per request"
}
run "health ?passing (cache hit)" "$api/v1/health/service/web?passing"
run "flags ?user=<new> (cache miss)" -s $dir/users.lua "$api"
kill $pid; wait $pid 2>/dev/null; rm -rf $dir
