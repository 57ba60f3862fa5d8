#!/usr/bin/env bash
# Usage: bash benches/serve_cpu.sh   (TWIN=path/to/twin to choose the binary; a release build by default)
# Issue 14's serving target, set up as issue 6's measurement (PERF.md "Serving load test"):
# twin gen --users 200 (~250 behaviours, 100 candidates), a twin model, serve on cpu (fast) and
# cpu-ref, loadtest at 8 callers for 5 s, twice each, alternating.
set -u
T=${TWIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/twin}
W=$(mktemp -d)
$T gen --out $W/d.twd --users 200 > $W/gen.log 2>&1 || { cat $W/gen.log; exit 1; }
$T train --data $W/d.twd --variant twin --out $W/m.twm --epochs 1 --backend cpu > $W/train.log 2>&1 || { tail $W/train.log; exit 1; }
for round in 1 2; do
  for be in cpu cpu-ref; do
    $T serve --model $W/m.twm --backend $be --addr 127.0.0.1:0 > $W/serve.log 2>$W/serve.err &
    pid=$!
    addr=""
    for _ in $(seq 1 300); do addr=$(sed -n 's|^listening on http://\([^ ]*\).*|\1|p' $W/serve.log | head -n1); [ -n "$addr" ] && break; sleep 0.1; done
    echo "round $round backend $be"
    $T loadtest --url http://$addr --data $W/d.twd --concurrency 8 --seconds 5 2>&1 | tail -n 3
    kill $pid; wait $pid 2>/dev/null
  done
done
rm -rf $W
