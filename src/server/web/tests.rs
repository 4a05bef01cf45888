use chrono::TimeZone;

use super::*;
use crate::model::{ErrorKind, TaskStats};

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0).unwrap()
}

fn snap(at: DateTime<Utc>, stats: Option<(u64, u64)>) -> Snapshot {
    Snapshot {
        id: 0,
        series_id: 1,
        polled_at: at,
        stats: stats.map(|(total_num, running_num)| TaskStats { total_num, running_num, last_task_start_time: None }),
        latency_ms: 1,
        http_status: None,
        error_kind: stats.is_none().then_some(ErrorKind::Server),
        error_code: None,
        error_message: None,
        request_id: None,
        task: None,
    }
}

#[test]
fn every_template_parses() {
    assert!(environment().is_ok(), "{:?}", environment().err());
}

#[test]
fn a_long_history_is_bucketed_down_to_the_point_limit() {
    // 30 days every minute: 43,200 polls.
    let polls: Vec<Snapshot> =
        (0..43_200).map(|m| snap(t0() + TimeDelta::minutes(m), Some((m as u64 / 60, (m % 3) as u64)))).collect();
    let end = t0() + TimeDelta::minutes(43_199);
    let chart = Chart::draw("t / cluster_scan", &polls, t0(), end);
    assert_eq!(chart.polls, 43_200);
    assert!(chart.points <= MAX_CHART_POINTS, "{}", chart.points);
    assert!(chart.points > MAX_CHART_POINTS / 2, "{}", chart.points);
    assert_eq!(chart.total_lines.len(), 1, "no failure, one unbroken line");
    let points = chart.total_lines[0].split(' ').count();
    assert_eq!(points, chart.points);
    // Every point lies inside the plot area.
    for p in chart.total_lines[0].split(' ').chain(chart.running_lines[0].split(' ')) {
        let (x, y) = p.split_once(',').unwrap();
        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
        assert!((f64::from(LEFT)..=f64::from(RIGHT)).contains(&x), "{p}");
        assert!((f64::from(TOP)..=f64::from(BOTTOM)).contains(&y), "{p}");
    }
    // The busiest bucket's running count shows (max, not last), and the axis reaches it.
    assert_eq!(chart.running_ticks.last().unwrap().label, "2");
}

#[test]
fn failed_polls_break_the_lines_and_are_marked() {
    let polls = vec![
        snap(t0(), Some((10, 0))),
        snap(t0() + TimeDelta::hours(1), Some((11, 1))),
        snap(t0() + TimeDelta::hours(2), None),
        snap(t0() + TimeDelta::hours(3), None),
        snap(t0() + TimeDelta::hours(4), Some((12, 0))),
    ];
    let chart = Chart::draw("x", &polls, t0() - TimeDelta::days(7), t0() + TimeDelta::hours(4));
    assert_eq!(chart.failed_polls, 2);
    assert_eq!(chart.failures.len(), 2);
    assert_eq!(chart.total_lines.len(), 2, "{:?}", chart.total_lines);
    assert_eq!(chart.running_lines.len(), 2);
    // The lone point after the gap is drawn as a dot (the same point twice).
    let last: Vec<&str> = chart.total_lines[1].split(' ').collect();
    assert_eq!(last.len(), 2);
    assert_eq!(last[0], last[1]);
    // The chart starts at the first poll, not seven days earlier.
    assert_eq!(chart.x_ticks[0].at, f64::from(LEFT));
    assert!(chart.x_ticks[0].label.ends_with(&t0().format("%H:%M").to_string()), "{:?}", chart.x_ticks[0]);
    // Total gets its own range, so a step of one task is visible: 10 at the bottom, 12 at the top.
    assert_eq!(chart.total_ticks.first().unwrap().label, "10");
    assert_eq!(chart.total_ticks.last().unwrap().label, "12");
}

#[test]
fn a_series_without_a_good_poll_draws_no_line_and_does_not_panic() {
    for polls in [vec![], vec![snap(t0(), None)], vec![snap(DateTime::<Utc>::MIN_UTC, None)]] {
        let chart = Chart::draw("x", &polls, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        assert!(chart.total_lines.is_empty());
        assert_eq!(chart.points, 0);
        assert_eq!(chart.failures.len(), polls.len());
    }
    // Extreme values on the axes.
    let chart = Chart::draw("x", &[snap(t0(), Some((u64::MAX, u64::MAX)))], t0(), t0());
    assert_eq!(chart.points, 1);
    assert_eq!(chart.total_ticks.last().unwrap().label, u64::MAX.to_string());
}

#[test]
fn nice_ceilings_are_one_two_or_five_times_a_power_of_ten() {
    for (n, want) in [(0, 1), (1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (499, 500), (501, 1000), (u64::MAX, u64::MAX)]
    {
        assert_eq!(nice_ceiling(n), want, "{n}");
    }
}

#[test]
fn bidi_controls_are_shown_as_visible_marks_and_everything_is_escaped() {
    #[derive(Serialize)]
    struct V {
        root: &'static str,
        title: &'static str,
        status: u16,
        message: &'static str,
    }
    let page = render(
        "error.html",
        StatusCode::NOT_FOUND,
        &V { root: "./", title: "t", status: 404, message: "ok\u{202E}txt.exe <script>x</script> \"'{{ 1 }}" },
    );
    assert!(page.html.contains("ok&lt;U+202E&gt;txt.exe &lt;script&gt;x&lt;&#x2f;script&gt;"), "{}", page.html);
    assert!(page.html.contains("&quot;&#x27;{{ 1 }}"), "{}", page.html);
    assert!(!page.html.contains('\u{202E}'));
}
