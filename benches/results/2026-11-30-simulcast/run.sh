#!/bin/sh
# The runs of results.jsonl: one publisher of a single 1.7 Mbit/s encoding
# vs one of three simulcast encodings, interleaved, release build, in a
# fresh network namespace from the repository root:
#   unshare -n sh -c 'ip link set lo up; sh benches/results/2026-11-30-simulcast/run.sh'
OUT=${OUT:-results.jsonl}
L=target/release/noom-load
for rep in 1 2 3; do
  for shape in "--subscribers 10" "--rooms 2 --publishers 3 --subscribers 2"; do
    echo "== rep $rep $shape single  loadavg $(cat /proc/loadavg)"
    $L run --target noom $shape --bitrate 1700000 --duration 10 --warmup 3 --json-out "$OUT"
    echo "== rep $rep $shape simulcast  loadavg $(cat /proc/loadavg)"
    $L run --target noom $shape --simulcast --duration 10 --warmup 3 --json-out "$OUT"
  done
done
