#!/bin/bash
# Usage: bench/scripts/memory-five-ways.sh SHOAL_BIN LABEL [workload] — starts one
# agent on an embedded default config (own loopback address, own data dir),
# reads memory five ways at +3 s, +30 s and +75 s: VmRSS, RssAnon, RssFile
# (status), Pss, and USS (Private_Clean + Private_Dirty from smaps_rollup),
# with the thread count and the resident part of the binary's own code
# (the r-xp mapping of SHOAL_BIN in smaps).
#
# With `workload`, after +75 s: 20 service registrations (10 with a TTL
# check, passed), 200 KV writes, 2 flags, ~1,000 HTTP lookups (health,
# catalog, KV, flags, members, /metrics) and 300 DNS queries (A and SRV),
# then 60 s idle, then one more reading (`after workload`); the clear_refs
# bits are reset 30 s into that idle time, so `text touched` in the last
# line is the code the idle agent ran in its last 30 s.
#
# SHOAL_BIN may be Serf's binary (`serf`): the same readings of one idle
# Serf agent, for comparison.
#
# MEM_IP (default 127.77.0.1) lets several agents run side by side;
# MEM_DNS=off starts the agent without DNS; MEM_KEEP=1 leaves the agent running (for a closer look) and prints its pid.
bin=$1; label=$2; mode=${3:-idle}
ip=${MEM_IP:-127.77.0.1}
http=$ip:18500; dns_port=18600
dir=$(mktemp -d)
if [ "$(basename $bin)" = serf ]; then
  # Serf for comparison (idle readings only: it has no catalog or KV).
  $bin agent -node mem -bind $ip:17946 -rpc-addr $ip:17373 > $dir/log 2>&1 &
else
  $bin agent --dev --data-dir $dir/data --bind $ip:17946 --http-addr $http --dns-addr ${MEM_DNS:-$ip:$dns_port} > $dir/log 2>&1 &
fi
pid=$!
start=$(date +%s)

read_memory() { # $1: label of the reading
  local s=/proc/$pid/status r=/proc/$pid/smaps_rollup
  local vm an fi pss uss threads text ref
  vm=$(awk '/^VmRSS/{print $2}' $s); an=$(awk '/^RssAnon/{print $2}' $s); fi=$(awk '/^RssFile/{print $2}' $s)
  pss=$(awk '/^Pss:/{print $2}' $r); uss=$(awk '/^Private_(Clean|Dirty)/{t+=$2} END{print t}' $r)
  threads=$(ls /proc/$pid/task | wc -l)
  # The binary's executable mapping: its size, resident part, referenced part.
  read -r text_size text ref < <(awk -v bin="$(readlink -f $bin)" '
    /^[0-9a-f]+-[0-9a-f]+ /{take = ($2 == "r-xp" && $6 == bin)}
    take && /^Size:/{s=$2} take && /^Rss:/{r=$2} take && /^Referenced:/{f=$2}
    END{print s, r, f}' /proc/$pid/smaps)
  echo "$label $1: VmRSS $vm kB, RssAnon $an kB, RssFile $fi kB, PSS $pss kB, USS $uss kB, threads $threads, text resident $text of $text_size kB (referenced $ref kB)"
}

wait_until() { while [ $(( $(date +%s) - start )) -lt $1 ]; do sleep 0.2; done; }

for at in 3 30 75; do
  wait_until $at
  read_memory "+${at}s"
done

if [ "$mode" = workload ]; then
  api=http://$http
  for i in $(seq 1 20); do
    if [ $((i % 2)) = 0 ]; then check=',"Check":{"CheckID":"ttl-'$i'","TTL":"600s"}'; else check=; fi
    curl -sf -X PUT $api/v1/agent/service/register -d '{"ID":"web-'$i'","Name":"web","Port":'$((8000 + i))',"Tags":["v1"]'"$check"'}' > /dev/null || echo "register $i failed"
    [ -n "$check" ] && curl -sf -X PUT "$api/v1/agent/check/pass/ttl-$i" > /dev/null
  done
  for i in $(seq 1 200); do echo "url = \"$api/v1/kv/app/config/key-$i\""; echo "upload-file = \"$dir/value\""; done > $dir/kv-writes
  echo "value of some length for the memory workload" > $dir/value
  curl -sf -X PUT -K $dir/kv-writes > /dev/null || echo "KV writes failed"
  curl -sf -X PUT $api/v1/kv/_shoal/flags/new-checkout -d '{"enabled":true,"rollout_percentage":25}' > /dev/null || echo "flag write failed"
  curl -sf -X PUT $api/v1/kv/_shoal/flags/dark-mode -d '{"enabled":false,"rollout_percentage":0}' > /dev/null || echo "flag write failed"
  for round in $(seq 1 10); do
    for i in $(seq 1 20); do
      echo "url = \"$api/v1/health/service/web?passing\""
      echo "url = \"$api/v1/catalog/service/web\""
      echo "url = \"$api/v1/kv/app/config/key-$((round * 20 + i - 20))\""
      echo "url = \"$api/v1/flags/new-checkout?user=u$round-$i\""
    done
    echo "url = \"$api/v1/catalog/services\""
    echo "url = \"$api/v1/kv/app/?recurse\""
    echo "url = \"$api/v1/agent/members\""
    echo "url = \"$api/metrics\""
  done > $dir/lookups
  curl -sf -K $dir/lookups > /dev/null || echo "lookups failed"
  for i in $(seq 1 150); do echo "web.service.consul A"; echo "_web._tcp.service.consul SRV"; done > $dir/dns-queries
  dig @$ip -p $dns_port +tries=1 +time=2 -f $dir/dns-queries | grep -c "status: NOERROR" | sed 's/^/DNS answers NOERROR: /'
  echo "$label workload done at +$(( $(date +%s) - start ))s"
  done_at=$(date +%s)
  while [ $(( $(date +%s) - done_at )) -lt 30 ]; do sleep 0.2; done
  echo 1 > /proc/$pid/clear_refs
  while [ $(( $(date +%s) - done_at )) -lt 60 ]; do sleep 0.2; done
  read_memory "after workload + 60s idle"
fi
if [ -n "$MEM_KEEP" ]; then echo "left running: pid $pid, dir $dir"; exit 0; fi
kill $pid; wait $pid 2>/dev/null; rm -rf $dir
