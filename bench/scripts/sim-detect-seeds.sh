#!/bin/bash
# Detection (simulator, 10 kills per size, victims restarted 15 s later) per
# seed, for the build in the working tree. Usage: bench/scripts/sim-detect-seeds.sh LABEL OUTDIR
label=$1; out=$2; mkdir -p $out
for seed in 1 2 3 4 5 6 7 8 9 10; do
  cargo run --release -q -p shoal-simulations --bin shoal-sim -- sweep --only detect --seed $seed --out $out/s$seed >/dev/null 2>&1
  tail -n +2 $out/s$seed/detect.csv | cut -d, -f1,2,15,16,17,18 | sed "s/^/$label,/"
done
