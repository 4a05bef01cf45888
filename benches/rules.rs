//! Figure 6 of BENCHMARKS.md: `rules::evaluate_all` over 10,000 series per cycle, each with the history the store
//! hands it in production: 48 h (the default look-back, `total_stalled.window`) of 5-minute polls, 577 snapshots.
//! Baseline: one pass that only reads every snapshot of the same histories (the floor any evaluation pays).
//!
//! 10,000 × 577 snapshots would take ~1 GB, so 256 distinct histories (healthy, stale, stuck, stalled, failing
//! and mixed, ~25 MB — far beyond the CPU caches) are shared round-robin by the 10,000 series.

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use scanwatch::model::{ErrorKind, SeriesKey, Snapshot, TaskStats, TaskType};
use scanwatch::rules::{RuleSet, evaluate_all};

const SERIES: usize = 10_000;
const DISTINCT: usize = 256;
const POLLS: i64 = 48 * 12 + 1;

fn history(variant: usize, now: DateTime<Utc>) -> Vec<Snapshot> {
    let start = now - TimeDelta::minutes(5 * (POLLS - 1));
    let kind = variant % 5;
    let mut total = 100 + variant as u64;
    let mut last_start = start - TimeDelta::hours(1);
    (0..POLLS)
        .map(|i| {
            let at = start + TimeDelta::minutes(5 * i);
            let failing = kind == 4 && i >= POLLS - 6;
            // Healthy series start a task every 4-8 h; stale ones stop after the first 12 h; stalled ones never.
            let every = 48 + (variant % 49) as i64;
            let starts = match kind {
                1 => i < 144 && i % every == 0,
                3 => false,
                _ => i % every == 0,
            };
            if starts {
                total += 1;
                last_start = at;
            }
            let running = if kind == 2 && i > POLLS - 30 { 1 } else { u64::from(i % every < 3) };
            Snapshot {
                task: None,
                id: i,
                series_id: variant as i64,
                polled_at: at,
                stats: (!failing).then_some(TaskStats {
                    total_num: total,
                    running_num: running,
                    last_task_start_time: Some(last_start.timestamp_millis()),
                }),
                latency_ms: 80 + (i as u64 % 40),
                http_status: Some(if failing { 503 } else { 200 }),
                error_kind: failing.then_some(ErrorKind::Server),
                error_code: failing.then(|| "APIGW.0202".to_string()),
                error_message: failing.then(|| "Backend unavailable".to_string()),
                request_id: Some(format!("{:032x}", i * 7919 + variant as i64)),
            }
        })
        .collect()
}

fn rules(c: &mut Criterion) {
    let now = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).single().unwrap_or_default();
    let histories: Vec<Vec<Snapshot>> = (0..DISTINCT).map(|v| history(v, now)).collect();
    let set = RuleSet::default();
    let keys: Vec<SeriesKey> = TaskType::ALL
        .into_iter()
        .map(|task_type| SeriesKey {
            target: "t".into(),
            account: "a".into(),
            region: "cn-north-4".into(),
            project_id: "0123456789abcdef0123456789abcdef".into(),
            enterprise_project_id: None,
            task_type,
        })
        .collect();
    let breaches: usize = (0..SERIES)
        .map(|i| {
            evaluate_all(&set, &keys[i % 2], &histories[i % DISTINCT], now)
                .iter()
                .filter(|(_, _, o)| o.is_breach())
                .count()
        })
        .sum();
    assert!(breaches > 0 && breaches < SERIES * 4, "the histories must mix healthy and breaching series");
    eprintln!("rules bench: {SERIES} series x {POLLS} snapshots, {breaches} breaching (series, rule) pairs");

    let mut group = c.benchmark_group("rules_cycle_10000_series");
    group.sample_size(10);
    group.bench_function("baseline_read_every_snapshot", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for i in 0..SERIES {
                for s in &histories[i % DISTINCT] {
                    acc = acc.wrapping_add(s.stats.map_or(1, |t| t.total_num ^ t.running_num));
                    acc = acc.wrapping_add(s.polled_at.timestamp_millis() as u64);
                }
            }
            black_box(acc)
        })
    });
    group.bench_function("evaluate_all", |b| {
        b.iter(|| {
            for i in 0..SERIES {
                black_box(evaluate_all(&set, &keys[i % 2], black_box(&histories[i % DISTINCT]), now));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
