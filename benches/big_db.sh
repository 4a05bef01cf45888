#!/usr/bin/env bash
# Issue 13's per-poll and history rows of BENCHMARKS.md: `scanwatch poll` of one series on a database of 10M snapshots
# (1,000 series of one account x 35 days of 5-minute polls) against the same poll on an empty database, and `history`
# of one target against the sqlite3 shell running the same query on the same file.
#
#   benches/big_db.sh BINARY [DIR]      (DIR keeps the generated database between runs; default a temporary one)
#
# The database is made by BINARY (its migrations) and filled by the sqlite3 shell in poll order (rows of all series
# interleaved in time, as a fleet writes them). Needs sqlite3 and hyperfine (Debian packages of those names).
set -euo pipefail
bin=$(realpath "$1")
dir=${2:-$(mktemp -d)}
mkdir -p "$dir"
port=$((20000 + RANDOM % 20000))
trap 'kill $sim 2>/dev/null || true; wait 2>/dev/null || true' EXIT
runs=${RUNS:-30}

printf '[simulator]\ncalls_per_minute = 0\n\n[[credentials]]\nak = "HPUAEXAMPLEAK0000001"\nsk = "exampleSecretKey0000000000000000000000001"\n\n[[series]]\nproject_id = "%032x"\ntask_type = "cluster_scan"\n  [[series.steps]]\n  at = "0s"\n  total_num = 100\n  total_per_hour = 60.0\n  running_num = 0\n  last_task_age = "5m"\n' 1 > "$dir/scenario.toml"
for db in big empty; do
  printf '[storage]\npath = "%s/%s.db"\n\n[schedule]\ninterval = "5m"\nhost_calls_per_minute = 600\n\n[[accounts]]\nname = "a1"\nak_env = "BENCH_AK"\nsk_env = "BENCH_SK"\ncalls_per_minute = 600\n\n[[targets]]\nname = "t0"\naccount = "a1"\nregion = "cn-north-4"\nendpoint = "http://127.0.0.1:%d"\nproject_id = "%032x"\ntask_types = ["cluster_scan"]\n' \
    "$dir" "$db" "$port" 1 > "$dir/$db.toml"
done
export BENCH_AK=HPUAEXAMPLEAK0000001 BENCH_SK=exampleSecretKey0000000000000000000000001
"$bin" simulate --listen "127.0.0.1:$port" --scenario "$dir/scenario.toml" > "$dir/sim.log" 2>&1 & sim=$!
sleep 1

if [ ! -e "$dir/big.db" ]; then
  # The schema and series t0 come from the binary; then 999 more series of the account and 10,080 polls each.
  "$bin" --config "$dir/big.toml" --log-level warn poll --deliver-timeout 0s > /dev/null
  start=$(date +%s.%N)
  sqlite3 "$dir/big.db" <<SQL
DELETE FROM snapshots;
INSERT INTO series (id, target, task_type, account, region, project_id)
  WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
  SELECT i, 't' || (i - 1), 'cluster_scan', 'a1', 'cn-north-4', printf('%032x', i) FROM n;
INSERT INTO snapshots (id, series_id, polled_at, ok, total_num, running_num, last_task_start_time, latency_ms,
                       http_status, request_id, sent)
  WITH RECURSIVE step(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM step WHERE k < 10079),
       s(id) AS (SELECT id FROM series)
  SELECT k * 1000 + s.id, s.id, $(date +%s)000 - (10080 - k) * 300000 - s.id, 1, 100 + k / 12, k % 3 = 0,
         $(date +%s)000 - (10080 - k) * 300000 - 3600000, 80 + k % 40, 200, printf('%032x', k * 1000 + s.id), 1
  FROM step, s ORDER BY k, s.id;
SQL
  echo "filled $(sqlite3 "$dir/big.db" 'SELECT count(*) FROM snapshots') snapshots in $(echo "$(date +%s.%N) - $start" | bc) s"
fi
# A first poll migrates a file made by an older release and rebuilds the series' rule state, as after an upgrade.
start=$(date +%s.%N)
"$bin" --config "$dir/big.toml" --log-level warn poll --deliver-timeout 0s > /dev/null
echo "first poll: $(echo "$(date +%s.%N) - $start" | bc) s; database $(du -h "$dir/big.db" | cut -f1)"
rm -f "$dir"/empty.db*
"$bin" --config "$dir/empty.toml" --log-level warn poll --deliver-timeout 0s > /dev/null

echo "load: $(uptime)"
hyperfine -N --warmup 3 --runs "$runs" --export-json "$dir/poll.json" \
  -n "poll, empty database" "$bin --config $dir/empty.toml --log-level warn poll --deliver-timeout 0s --format json" \
  -n "poll, 10M snapshots" "$bin --config $dir/big.toml --log-level warn poll --deliver-timeout 0s --format json"

since=$(( $(date +%s) * 1000 - 7 * 86400000 ))
week="SELECT * FROM (SELECT s.* FROM snapshots s WHERE s.series_id IN (SELECT id FROM series WHERE target = 't7')
      AND s.polled_at >= $since ORDER BY s.polled_at DESC, s.id DESC) ORDER BY polled_at, id;"
latest="SELECT * FROM (SELECT s.* FROM snapshots s WHERE s.series_id IN (SELECT id FROM series WHERE target = 't7')
        ORDER BY s.polled_at DESC, s.id DESC LIMIT 100) ORDER BY polled_at, id;"
echo "rows: $("$bin" --config "$dir/big.toml" history --target t7 --since 7d --format csv | tail -n +2 | wc -l) (7d), $(sqlite3 "$dir/big.db" "$week" | wc -l) (sqlite3)"
echo "load: $(uptime)"
hyperfine -N --warmup 5 --runs "$runs" --export-json "$dir/history.json" \
  -n "history --target t7 --since 7d --format json" "$bin --config $dir/big.toml history --target t7 --since 7d --format json" \
  -n "sqlite3 -json, same query" "sqlite3 -json $dir/big.db \"$week\"" \
  -n "history --target t7 --limit 100 --format json" "$bin --config $dir/big.toml history --target t7 --limit 100 --format json" \
  -n "sqlite3 -json, latest 100" "sqlite3 -json $dir/big.db \"$latest\""
