#!/bin/bash
# Usage: bench/scripts/memory-five-ways.sh SHOAL_BIN LABEL — starts one agent on an embedded default
# config (own loopback address, own data dir), reads memory five ways at
# +3 s, +30 s and +75 s: VmRSS, RssAnon, RssFile (status), Pss, and USS
# (Private_Clean + Private_Dirty from smaps_rollup).
bin=$1; label=$2
dir=$(mktemp -d)
$bin agent --dev --data-dir $dir/data --bind 127.77.0.1:17946 --http-addr 127.77.0.1:18500 --dns-addr 127.77.0.1:18600 > $dir/log 2>&1 &
pid=$!
start=$(date +%s)
for at in 3 30 75; do
  while [ $(( $(date +%s) - start )) -lt $at ]; do sleep 0.2; done
  s=/proc/$pid/status; r=/proc/$pid/smaps_rollup
  vm=$(awk '/^VmRSS/{print $2}' $s); an=$(awk '/^RssAnon/{print $2}' $s); fi=$(awk '/^RssFile/{print $2}' $s)
  pss=$(awk '/^Pss:/{print $2}' $r); uss=$(awk '/^Private_(Clean|Dirty)/{t+=$2} END{print t}' $r)
  echo "$label +${at}s: VmRSS $vm kB, RssAnon $an kB, RssFile $fi kB, PSS $pss kB, USS $uss kB"
done
kill $pid; wait $pid 2>/dev/null; rm -rf $dir
