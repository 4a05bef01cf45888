#!/usr/bin/env bash
# Figure 3 of BENCHMARKS.md: resident memory of an idle `scanwatch run` watching 100 series (50 targets x 2 task
# types, 10 accounts, 5 s interval) against the simulator, its HTTP API on, read from /proc/PID/smaps_rollup after
# a few cycles; beside it, in the same run, Debian's Alertmanager (`prometheus-alertmanager`) idle on loopback.
#
#   cargo build --release && benches/idle_rss.sh [BINARY] [SECONDS]      (defaults: target/release/scanwatch, 40)
#
#   SMAPS=1        adds scanwatch's per-mapping breakdown (Rss by file, anonymous mappings summed)
#   SCRAPE_MIN=N   then scrapes /metrics (and the JSON API) of both every 5 s for N minutes, printing RSS each minute
#   NO_AM=1        skips Alertmanager
#   WORKING_SET=1  adds what the daemon really touches in 20 s (smaps Referenced after clear_refs)
# Environment of the daemon passes through (e.g. MALLOC_ARENA_MAX, TOKIO_WORKER_THREADS to try a setting).
set -euo pipefail
bin=$(realpath "${1:-target/release/scanwatch}")
secs=${2:-40}
dir=$(mktemp -d)
sim='' daemon='' am=''
trap 'kill $sim $daemon $am 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
api=$((port + 1))
amport=$((port + 2))

{
  printf '[simulator]\ncalls_per_minute = 0\n\n[[credentials]]\nak = "HPUAEXAMPLEAK0000001"\nsk = "exampleSecretKey0000000000000000000000001"\n'
  for i in $(seq 1 50); do
    for t in cluster_scan iac_scan; do
      printf '\n[[series]]\nproject_id = "%032x"\ntask_type = "%s"\n  [[series.steps]]\n  at = "0s"\n  total_num = 100\n  total_per_hour = 60.0\n  running_num = 0\n  last_task_age = "5m"\n' "$i" "$t"
    done
  done
} > "$dir/scenario.toml"

{
  printf '[storage]\npath = "%s/scanwatch.db"\n\n[schedule]\ninterval = "5s"\nhost_calls_per_minute = 6000\n\n[server]\nlisten = "127.0.0.1:%d"\n' "$dir" "$api"
  for a in $(seq 1 10); do
    printf '\n[[accounts]]\nname = "a%d"\nak_env = "BENCH_AK"\nsk_env = "BENCH_SK"\ncalls_per_minute = 600\n' "$a"
  done
  for i in $(seq 1 50); do
    printf '\n[[targets]]\nname = "t%d"\naccount = "a%d"\nregion = "cn-north-4"\nendpoint = "http://127.0.0.1:%d"\nproject_id = "%032x"\ntask_types = ["cluster_scan", "iac_scan"]\n' \
      "$i" $(( (i - 1) % 10 + 1 )) "$port" "$i"
  done
} > "$dir/scanwatch.toml"

export BENCH_AK=HPUAEXAMPLEAK0000001 BENCH_SK=exampleSecretKey0000000000000000000000001
# The simulator runs from a copy of the binary, so that the daemon's code pages are its own (Referenced, RSS).
cp "$bin" "$dir/simulator"
"$dir/simulator" simulate --listen "127.0.0.1:$port" --scenario "$dir/scenario.toml" > "$dir/sim.log" 2>&1 & sim=$!
"$bin" --config "$dir/scanwatch.toml" validate
"$bin" --config "$dir/scanwatch.toml" --log-level warn run > "$dir/run.log" 2>&1 & daemon=$!
if [ -z "${NO_AM:-}" ]; then
  printf 'route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n' > "$dir/am.yml"
  prometheus-alertmanager --config.file="$dir/am.yml" --storage.path="$dir/am" --web.listen-address="127.0.0.1:$amport" \
    --cluster.listen-address= > "$dir/am.log" 2>&1 & am=$!
fi
sleep "$secs"
kill -0 "$daemon"

# Rss, anonymous and file-backed resident memory of a process, in kB (smaps_rollup).
rollup() {
  awk '/^Rss:/{r=$2} /^Anonymous:/{a=$2} END{printf "Rss %6d kB  anonymous %6d kB  file-backed %6d kB", r, a, r-a}' "/proc/$1/smaps_rollup"
}
echo "binary: $bin ($(du -h "$bin" | cut -f1)); $(nproc) cores; $(uname -r)"
echo "after ${secs}s: $("$bin" --config "$dir/scanwatch.toml" history --format csv | tail -n +2 | wc -l) snapshots stored"
echo "scanwatch:    $(rollup "$daemon")  threads $(ls "/proc/$daemon/task" | wc -l)  VmHWM $(awk '/^VmHWM/{print $2}' "/proc/$daemon/status") kB"
[ -n "$am" ] && echo "alertmanager: $(rollup "$am")  threads $(ls "/proc/$am/task" | wc -l)  ($(prometheus-alertmanager --version 2>&1 | head -1))"
if [ -n "${SMAPS:-}" ]; then
  awk '/^[0-9a-f]+-[0-9a-f]+ /{name=($6=="" ? "[anonymous]" : $6)} /^Rss:/{rss[name]+=$2} /^Anonymous:/{anon[name]+=$2}
       END{for(n in rss) if (rss[n]>=64) printf "%8d kB  (%d kB anonymous)  %s\n", rss[n], anon[n], n}' "/proc/$daemon/smaps" | sort -rn
  echo "threads: $(cat /proc/$daemon/task/*/comm | sort | uniq -c | tr -s ' ' | tr '\n' ',')"
fi
if [ -n "${WORKING_SET:-}" ]; then
  # Pages the daemon actually touches in 20 s of steady state: clear the referenced bits, wait, read them back. RSS
  # minus this is what the kernel mapped around them (fault-around) or what start-up left behind.
  echo 1 > "/proc/$daemon/clear_refs"; sleep 20
  echo "referenced in 20 s: $(awk '/^Referenced:/{r=$2} /^Anonymous:/{a=$2} END{printf "%d kB", r}' "/proc/$daemon/smaps_rollup") of $(rollup "$daemon")"
  awk '/^[0-9a-f]+-[0-9a-f]+ /{name=($6=="" ? "[anonymous]" : $6)} /^Referenced:/{r[name]+=$2} END{for(n in r) if (r[n]>=64) printf "%8d kB referenced  %s\n", r[n], n}' "/proc/$daemon/smaps" | sort -rn
fi
if [ -n "${SCRAPE_MIN:-}" ]; then
  echo "scraping every 5 s for $SCRAPE_MIN min: minute, scanwatch RSS, alertmanager RSS"
  paths=(/api/v1/targets /api/v1/alerts "/api/v1/snapshots?limit=100" /api/v1/notifications)
  for m in $(seq 1 "$SCRAPE_MIN"); do
    for s in $(seq 0 11); do
      curl -sf -o /dev/null "http://127.0.0.1:$api/metrics"
      curl -sf -o /dev/null "http://127.0.0.1:$api${paths[$((s % 4))]}"
      [ -n "$am" ] && curl -sf -o /dev/null "http://127.0.0.1:$amport/metrics"
      sleep 5
    done
    echo "min $m  scanwatch: $(rollup "$daemon")  |  alertmanager: $([ -n "$am" ] && rollup "$am")"
  done
fi
