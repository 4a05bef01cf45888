#!/usr/bin/env bash
# Figure 3 of BENCHMARKS.md: resident memory of an idle `scanwatch run` watching 100 series (50 targets x 2 task
# types, 10 accounts) against the simulator, read from /proc after a few cycles.
#
#   cargo build --release && benches/idle_rss.sh [BINARY] [SECONDS]      (defaults: target/release/scanwatch, 40)
set -euo pipefail
bin=$(realpath "${1:-target/release/scanwatch}")
secs=${2:-40}
dir=$(mktemp -d)
trap 'kill $sim $daemon 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))

{
  printf '[simulator]\ncalls_per_minute = 0\n\n[[credentials]]\nak = "HPUAEXAMPLEAK0000001"\nsk = "exampleSecretKey0000000000000000000000001"\n'
  for i in $(seq 1 50); do
    for t in cluster_scan iac_scan; do
      printf '\n[[series]]\nproject_id = "%032x"\ntask_type = "%s"\n  [[series.steps]]\n  at = "0s"\n  total_num = 100\n  total_per_hour = 60.0\n  running_num = 0\n  last_task_age = "5m"\n' "$i" "$t"
    done
  done
} > "$dir/scenario.toml"

{
  printf '[storage]\npath = "%s/scanwatch.db"\n\n[schedule]\ninterval = "5s"\n' "$dir"
  for a in $(seq 1 10); do
    printf '\n[[accounts]]\nname = "a%d"\nak_env = "BENCH_AK"\nsk_env = "BENCH_SK"\ncalls_per_minute = 600\n' "$a"
  done
  for i in $(seq 1 50); do
    printf '\n[[targets]]\nname = "t%d"\naccount = "a%d"\nregion = "cn-north-4"\nendpoint = "http://127.0.0.1:%d"\nproject_id = "%032x"\ntask_types = ["cluster_scan", "iac_scan"]\n' \
      "$i" $(( (i - 1) % 10 + 1 )) "$port" "$i"
  done
} > "$dir/scanwatch.toml"

export BENCH_AK=HPUAEXAMPLEAK0000001 BENCH_SK=exampleSecretKey0000000000000000000000001
"$bin" simulate --listen "127.0.0.1:$port" --scenario "$dir/scenario.toml" > "$dir/sim.log" 2>&1 & sim=$!
"$bin" --config "$dir/scanwatch.toml" validate
"$bin" --config "$dir/scanwatch.toml" --log-level warn run > "$dir/run.log" 2>&1 & daemon=$!
sleep "$secs"
kill -0 "$daemon"
echo "binary: $bin ($(du -h "$bin" | cut -f1))"
echo "after ${secs}s: $("$bin" --config "$dir/scanwatch.toml" history --format csv | tail -n +2 | wc -l) snapshots stored"
grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem)' "/proc/$daemon/status"
if [ -n "${SMAPS:-}" ]; then awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6} /^Rss:/{rss[name]+=$2} END{for(n in rss) if (rss[n]>100) printf "%8d kB  %s\n", rss[n], n}' "/proc/$daemon/smaps" | sort -rn; fi
