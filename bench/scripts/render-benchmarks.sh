#!/usr/bin/env bash
# Renders docs/benchmarks.md from the runs it quotes: copies the `all`
# sweep's CSVs and environment files and the fault runs' rows into
# docs/benchmarks/, then runs `shoal-bench report` (which adds
# docs/benchmarks/notes.md and dns_notes.md: edit those by hand).
# Usage: bench/scripts/render-benchmarks.sh [SWEEP_DIR [FAULT_DIR...]]
set -euo pipefail
cd "$(dirname "$0")/../.."
sweep=${1:-docs/figures/issue-23/bench-all-ffe209e}
shift || true
if [ $# -eq 0 ]; then
  set -- docs/figures/issue-23/faults-n50-16c2faf/stop \
    docs/figures/issue-23/faults-n50-16c2faf/bursty-loss \
    docs/figures/issue-23/faults-n50-16c2faf/one-way-loss \
    docs/figures/issue-23/faults-n50-ffe209e/hog
fi
out=docs/benchmarks
for file in cluster_samples.csv cluster_resources.csv cluster_summary.csv \
  cluster_traffic.csv lookup.csv dns.csv environment.txt \
  lookup_environment.txt dns_environment.txt; do
  cp "$sweep/$file" "$out/$file"
done
head -1 "$1/faults.csv" > "$out/faults.csv"
: > "$out/faults_environment.txt"
for dir in "$@"; do
  tail -n +2 "$dir/faults.csv" >> "$out/faults.csv"
  { echo "# $dir/faults_environment.txt"; cat "$dir/faults_environment.txt"; echo; } \
    >> "$out/faults_environment.txt"
done
bench=${SHOAL_BENCH:-target/release/shoal-bench}
"$bench" report --out "$out" --markdown docs/benchmarks.md
