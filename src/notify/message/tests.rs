use chrono::TimeDelta;

use super::*;

fn notice(rule: RuleName, event: Event, summary: &str, value: &str) -> AlertNotice {
    let mut n = sample_notification().alerts[0].clone();
    n.rule = rule;
    n.event = event;
    n.summary = summary.to_string();
    n.value = value.to_string();
    n
}

fn en(format: Format) -> Style {
    Style { language: Language::En, tz: chrono_tz::Asia::Shanghai, format }
}

fn zh(format: Format) -> Style {
    Style { language: Language::ZhCn, tz: chrono_tz::Asia::Shanghai, format }
}

fn items(n: usize, len: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:03}{}", "x".repeat(len - 3))).collect()
}

#[test]
fn fit_keeps_everything_that_fits() {
    let f = fit("head", &items(3, 10), "\n\n", 1000, Unit::Bytes, Language::En);
    assert_eq!(f.shown, 3);
    assert_eq!(f.omitted, 0);
    assert_eq!(f.text.matches("\n\n").count(), 3);
}

#[test]
fn fit_cuts_to_the_limit_and_says_how_many_were_left_out() {
    for unit in [Unit::Bytes, Unit::Chars, Unit::JsonBytes] {
        let f = fit("title", &items(50, 100), "\n\n", 1000, unit, Language::En);
        assert!(unit.measure(&f.text) <= 1000, "{unit:?}: {}", unit.measure(&f.text));
        assert_eq!(f.shown + f.omitted, 50);
        assert!(f.shown >= 8, "{unit:?} keeps as many as fit: {}", f.shown);
        assert!(f.text.ends_with(&format!("\n\n… and {} more", f.omitted)), "{}", f.text);
        assert!(f.text.starts_with("title\n\n000"));
    }
}

#[test]
fn fit_takes_the_largest_prefix_exactly_at_the_limit() {
    // All four: head(4) + 4 × (sep 2 + item 10) = 52. Two: 4 + 2 × 12 + sep 2 + "… and 2 more" (14 bytes) = 44.
    let f = fit("head", &items(4, 10), "\n\n", 44, Unit::Bytes, Language::En);
    assert_eq!((f.shown, f.omitted), (2, 2));
    assert_eq!(f.text.len(), 44);
    let f = fit("head", &items(4, 10), "\n\n", 43, Unit::Bytes, Language::En);
    assert_eq!(f.shown, 1);
    assert_eq!(fit("head", &items(4, 10), "\n\n", 52, Unit::Bytes, Language::En).shown, 4);
}

#[test]
fn fit_says_the_rest_in_chinese() {
    let f = fit("", &items(20, 50), "\n\n", 200, Unit::Bytes, Language::ZhCn);
    assert!(f.text.ends_with(&format!("…… 另有 {} 条", f.omitted)), "{}", f.text);
    assert!(f.text.len() <= 200);
}

#[test]
fn fit_cuts_a_head_that_alone_is_too_long_on_a_character_boundary() {
    let head = "告警".repeat(100);
    let f = fit(&head, &items(2, 10), "\n\n", 50, Unit::Bytes, Language::En);
    assert!(f.text.len() <= 50);
    assert!(f.text.ends_with("… and 2 more"), "{}", f.text);
    assert!(f.text.starts_with("告警"));
    let f = fit(&head, &[], "", 20, Unit::Chars, Language::En);
    assert_eq!(f.text.chars().count(), 20);
    assert!(f.text.ends_with('…'));
}

#[test]
fn fit_never_returns_an_empty_text() {
    let f = fit("", &items(5, 100), "\n\n", 3, Unit::Bytes, Language::En);
    assert!(!f.text.is_empty());
}

#[test]
fn json_bytes_is_the_size_serde_json_writes() {
    let s = "line \"one\"\n\ttab \\ back 中文 \u{1} / 🔴";
    assert_eq!(Unit::JsonBytes.measure(s), serde_json::to_string(s).unwrap().len() - 2);
}

#[test]
fn titles_count_firing_alerts_and_name_rules_and_a_single_target() {
    let n = sample_notification();
    assert_eq!(title(&n, Language::En), "[FIRING:1] scanwatch: no_recent_scan, stuck_running (prod-cn-north-4)");
    assert_eq!(title(&n, Language::ZhCn), "【告警:1】scanwatch:no_recent_scan, stuck_running(prod-cn-north-4)");
    let mut resolved = n.clone();
    resolved.alerts.remove(0);
    assert_eq!(title(&resolved, Language::En), "[RESOLVED] scanwatch: stuck_running (prod-cn-north-4)");
    assert_eq!(title(&resolved, Language::ZhCn), "【恢复】scanwatch:stuck_running(prod-cn-north-4)");
    let mut two_targets = n.clone();
    two_targets.alerts[1].series.target = "other".into();
    two_targets.alerts[1].event = Event::Repeat;
    assert_eq!(title(&two_targets, Language::En), "[FIRING:2] scanwatch: no_recent_scan, stuck_running");
}

#[test]
fn an_english_block_has_everything_an_on_call_person_needs() {
    let a = &sample_notification().alerts[0];
    let text = alert_block(a, &en(Format::Plain));
    for want in [
        "FIRING · critical · no_recent_scan · prod-cn-north-4/cluster_scan",
        "no cluster scan has started for 31h; limit 24h",
        "Target: prod-cn-north-4",
        "Account: prod",
        "Region: cn-north-4",
        "Project: 0123456789abcdef0123456789abcdef",
        "Enterprise project: all_granted_eps",
        "Task type: cluster scan",
        "Since: 2025-04-23 00:33 CST",
        "Labels: env=prod, team=secops",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn times_are_shown_in_the_channels_zone() {
    let a = &sample_notification().alerts[0];
    let utc = Style { tz: chrono_tz::UTC, ..en(Format::Plain) };
    assert!(alert_block(a, &utc).contains("Since: 2025-04-22 16:33 UTC"));
    let berlin = Style { tz: chrono_tz::Europe::Berlin, ..en(Format::Plain) };
    assert!(alert_block(a, &berlin).contains("Since: 2025-04-22 18:33 CEST"));
}

#[test]
fn repeats_say_how_long_and_resolutions_say_after_how_long() {
    let mut a = sample_notification().alerts[0].clone();
    a.event = Event::Repeat;
    a.at = a.since + TimeDelta::hours(5);
    assert!(alert_block(&a, &en(Format::Plain)).contains("Status: still firing for 5h"));
    assert!(alert_block(&a, &zh(Format::Plain)).contains("状态:仍在告警,已持续 5h"));
    a.event = Event::Resolved;
    a.at = a.since + TimeDelta::minutes(200);
    let text = alert_block(&a, &en(Format::Plain));
    assert!(text.contains("Status: resolved after 3h20m (at 2025-04-23 03:53 CST)"), "{text}");
    assert!(text.starts_with("RESOLVED"));
}

#[test]
fn chinese_blocks_render_their_own_sentences_from_rule_and_value() {
    let cases = [
        (
            notice(RuleName::NoRecentScan, Event::Firing, "no cluster scan has started for 31h; limit 24h", "31h"),
            "集群扫描已 31h 未启动新任务(阈值 24h)",
        ),
        (
            notice(RuleName::NoRecentScan, Event::Firing, "no cluster scan has ever started", "never"),
            "集群扫描从未启动过任务",
        ),
        (
            notice(
                RuleName::StuckRunning,
                Event::Firing,
                "1 cluster scan task(s) running for 2h10m with no new task started (the latest task started 2025-04-22 05:33 UTC); limit 2h",
                "2h10m",
            ),
            "集群扫描任务已运行 2h10m 且没有新任务启动(阈值 2h)",
        ),
        (
            notice(RuleName::TotalStalled, Event::Firing, "cluster scan total stayed at 17 for 50h; window 48h", "50h"),
            "集群扫描任务总数已 50h 没有增长(窗口 48h)",
        ),
        (
            notice(
                RuleName::PollFailing,
                Event::Firing,
                "3 polls failed in a row: server (HTTP 503): Service Unavailable",
                "3 failed polls",
            ),
            "HSS 接口轮询已连续失败 3 次;错误:server (HTTP 503): Service Unavailable",
        ),
        (
            notice(
                RuleName::PollFailing,
                Event::Firing,
                "HSS rejects the account's credentials: auth (HTTP 401, APIGW.0301): Incorrect IAM authentication",
                "1 failed poll",
            ),
            "HSS 拒绝了账号凭据;错误:auth (HTTP 401, APIGW.0301): Incorrect IAM authentication",
        ),
    ];
    for (a, want) in cases {
        assert_eq!(describe(&a, Language::ZhCn), want);
    }
    let block = alert_block(&cases_first(), &zh(Format::Markdown));
    for want in [
        "告警 · 严重 · 长时间未扫描(no_recent_scan)",
        "- 目标:prod-cn-north-4",
        "- 区域:cn-north-4",
        "- 企业项目:all_granted_eps",
        "- 任务类型:集群扫描",
        "- 开始时间:2025-04-23 00:33 CST",
    ] {
        assert!(block.contains(want), "missing {want:?} in\n{block}");
    }
}

fn cases_first() -> AlertNotice {
    sample_notification().alerts[0].clone()
}

#[test]
fn outside_text_cannot_become_markup() {
    let mut a = cases_first();
    a.summary = "HSS said <at user_id=\"all\">所有人</at> & <b>".to_string();
    assert!(alert_block(&a, &en(Format::Markdown)).contains("HSS said ＜at user_id=\"all\"＞所有人＜/at＞"));
    assert!(alert_block(&a, &en(Format::Html)).contains("HSS said &lt;at user_id=&quot;all&quot;&gt;"));
    assert!(alert_block(&a, &en(Format::Slack)).contains("&amp; &lt;b&gt;"));
}

#[test]
fn every_format_renders_both_alerts_of_the_sample() {
    let n = sample_notification();
    for format in [Format::Plain, Format::Markdown, Format::Slack, Format::DingTalk, Format::WeCom, Format::Html] {
        let body = builtin_body(&n, &en(format), true, Budget { limit: 100_000, unit: Unit::Bytes });
        assert_eq!(body.shown, 2, "{format:?}");
        assert!(body.text.contains("no_recent_scan") && body.text.contains("stuck_running"), "{format:?}");
    }
}

#[test]
fn a_user_template_sees_the_documented_context() {
    let n = sample_notification();
    let src = "{{ title }}|{{ language }}|{{ status }}|{{ counts.total }}/{{ counts.firing }}/{{ counts.resolved }}\
               {% for a in alerts %}|{{ a.severity }} {{ a.rule }} {{ a.target }} {{ a.task_type }} {{ a.labels.env }} \
               {{ a.since }} {{ a.lasted }} {{ a.event }}{% endfor %}";
    let text = render_template(src, &context(&n, &en(Format::Markdown))).unwrap();
    assert_eq!(
        text,
        "[FIRING:1] scanwatch: no_recent_scan, stuck_running (prod-cn-north-4)|en|firing|2/1/1\
         |critical no_recent_scan prod-cn-north-4 cluster_scan prod 2025-04-23 00:33 CST 0s firing\
         |warning stuck_running prod-cn-north-4 iac_scan prod 2025-04-22 20:33 CST 3h20m resolved"
    );
    let zh_text = render_template("{{ alerts[0].description }}", &context(&n, &zh(Format::Markdown))).unwrap();
    assert_eq!(zh_text, "集群扫描已 31h 未启动新任务(阈值 24h)");
}

#[test]
fn check_template_accepts_good_templates_and_names_the_error_of_bad_ones() {
    assert_eq!(check_template("{% for a in alerts %}{{ a.target }}: {{ a.description }}\n{% endfor %}"), Ok(()));
    let syntax = check_template("{% for a in alerts %}{{ a.target }").unwrap_err();
    assert!(syntax.contains("syntax error"), "{syntax}");
    let undefined = check_template("{{ alerts[0].sumary }}").unwrap_err();
    assert!(undefined.contains("undefined"), "{undefined}");
    let empty = check_template("{% if false %}x{% endif %}").unwrap_err();
    assert!(empty.contains("empty"), "{empty}");
    let runaway = check_template("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
    assert!(runaway.is_err());
}

#[test]
fn a_template_that_fails_at_runtime_falls_back_to_the_built_in_body() {
    // Valid against the two sample alerts; breaks when there are more than two.
    let src = "{% if counts.total > 2 %}{{ no_such_name }}{% endif %}{{ title }}";
    assert_eq!(check_template(src), Ok(()));
    let mut n = sample_notification();
    n.alerts.push(n.alerts[0].clone());
    let budget = Budget { limit: 100_000, unit: Unit::Bytes };
    let text = body(&n, &en(Format::Markdown), Some(src), false, budget, "ops");
    assert_eq!(text, builtin_body(&n, &en(Format::Markdown), false, budget).text);
    assert!(text.contains("no cluster scan has started for 31h"));
    let ok = body(&sample_notification(), &en(Format::Markdown), Some(src), false, budget, "ops");
    assert_eq!(ok, title(&sample_notification(), Language::En));
}

#[test]
fn a_template_that_renders_nothing_falls_back_to_the_built_in_body() {
    let n = sample_notification();
    let budget = Budget { limit: 100_000, unit: Unit::Bytes };
    let text = body(&n, &en(Format::Plain), Some("{% if counts.total > 5 %}x{% endif %}   "), true, budget, "ops");
    assert!(text.starts_with("[FIRING:1]"), "{text}");
}

#[test]
fn a_long_template_output_is_cut_to_the_budget() {
    let n = sample_notification();
    let budget = Budget { limit: 100, unit: Unit::Chars };
    let text = body(&n, &en(Format::Plain), Some("{% for i in range(1000) %}word {% endfor %}"), false, budget, "ops");
    assert_eq!(text.chars().count(), 100);
    assert!(text.ends_with('…'));
}

#[test]
fn untrusted_text_is_one_line_bounded_and_never_markup_or_a_mention() {
    let hostile = "<!channel> @all <at id=all></at> **bold** [x](http://evil) _it_ `code`\n\tnext\u{202E} & \"q\" 'a'";
    let cases = [
        (
            Format::Plain,
            "<\u{200D}!channel> @\u{200D}all <\u{200D}at id=all><\u{200D}/at> **bold** [x](http://evil) _it_ `code` next & \"q\" 'a'",
        ),
        (
            Format::Html,
            "&lt;!channel&gt; @\u{200D}all &lt;at id=all&gt;&lt;/at&gt; **bold** [x](http://evil) _it_ `code` next &amp; &quot;q&quot; &#39;a&#39;",
        ),
        (
            Format::Slack,
            "&lt;!channel&gt; @\u{200D}all &lt;at id=all&gt;&lt;/at&gt; ＊＊bold＊＊ [x](http://evil) ＿it＿ ｀code｀ next &amp; \"q\" 'a'",
        ),
        (
            Format::Markdown,
            "＜!channel＞ @\u{200D}all ＜at id=all＞＜/at＞ ＊＊bold＊＊ ［x］(http://evil) ＿it＿ ｀code｀ next & \"q\" 'a'",
        ),
    ];
    for (format, want) in cases {
        assert_eq!(untrusted(format, hostile, 1000), want, "{format:?}");
    }
    for format in [Format::DingTalk, Format::WeCom] {
        assert_eq!(untrusted(format, hostile, 1000), untrusted(Format::Markdown, hostile, 1000));
    }
    // Names keep their inner underscores; a mobile number cannot be @-mentioned.
    assert_eq!(untrusted(Format::Markdown, "prod_cluster_a", 100), "prod_cluster_a");
    assert_eq!(untrusted(Format::DingTalk, "call @13800138000", 100), "call @\u{200D}13800138000");
    assert_eq!(untrusted(Format::WeCom, "<@zhangsan> @所有人", 100), "＜@\u{200D}zhangsan＞ @\u{200D}所有人");
}

#[test]
fn untrusted_text_is_cut_to_its_bound_with_an_ellipsis() {
    let long = format!("{}\n{}", "a".repeat(10), "b".repeat(10_000));
    let cut = untrusted(Format::Plain, &long, MAX_NAME_CHARS);
    assert_eq!(cut.chars().count(), MAX_NAME_CHARS);
    assert!(cut.starts_with("aaaaaaaaaa bbb") && cut.ends_with("b…"), "{cut}");
    assert_eq!(untrusted(Format::Plain, &"中".repeat(400), 300).chars().count(), 300);
    assert_eq!(untrusted(Format::Plain, "short", 5), "short");
    assert_eq!(untrusted(Format::Plain, "  \n ", 5), "");
}

fn context_of(n: &Notification) -> &crate::model::AlertContext {
    n.alerts[0].context.as_ref().unwrap()
}

#[test]
fn the_sample_alert_shows_its_task_and_failed_clusters_in_both_languages() {
    let n = sample_notification();
    assert_eq!(context_of(&n).failed.len(), 2);
    let text = alert_block(&n.alerts[0], &en(Format::Plain));
    for want in [
        "  Task: nightly-cluster-scan (id 2f6c1b7e-5d4a-4e1b-9c3f-8a7b6c5d4e3f)",
        "  Trigger: scheduled",
        "  Task status: finished",
        "  Task started: 2025-04-21 17:03 CST",
        "  Task ended: 2025-04-21 17:45 CST",
        "  Clusters: 0 scanning, 3 succeeded, 2 failed",
        "  Failed cluster: prod-cce-beijing (cce): the cluster's API server did not answer within 30s",
        "  Failed cluster: idc-edge-01 (self_built_idc): the HSS agent on the cluster is offline",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("Time left") && !text.contains("more"), "{text}");
    let zh_text = alert_block(&n.alerts[0], &zh(Format::Markdown));
    for want in [
        "- 任务:nightly-cluster-scan(ID 2f6c1b7e-5d4a-4e1b-9c3f-8a7b6c5d4e3f)",
        "- 触发方式:定时",
        "- 任务状态:已完成",
        "- 任务开始:2025-04-21 17:03 CST",
        "- 集群:扫描中 0,成功 3,失败 2",
        "- 失败集群:prod-cce-beijing(cce):the cluster's API server did not answer within 30s",
    ] {
        assert!(zh_text.contains(want), "missing {want:?} in\n{zh_text}");
    }
    // The resolved sample alert has no context and renders as before.
    assert!(!alert_block(&n.alerts[1], &en(Format::Plain)).contains("Task:"));
}

#[test]
fn a_running_task_says_how_long_is_left_and_an_iac_task_lists_files_and_the_rest_are_counted() {
    let mut a = sample_notification().alerts[0].clone();
    let ctx = a.context.as_mut().unwrap();
    let task = ctx.task.as_mut().unwrap();
    task.task_status = "running".into();
    task.trigger_type = "manual".into();
    task.task_type = TaskType::IacScan;
    task.estimated_minutes = Some(12);
    task.end_time = None;
    ctx.failed = (0..8)
        .map(|i| crate::model::FailedResource {
            name: format!("deploy-{i}.yaml"),
            id: None,
            kind: Some("k8s_yaml".into()),
            failed_reason: "parse error".into(),
        })
        .collect();
    ctx.failed_total = 9;
    let text = alert_block(&a, &en(Format::Slack));
    for want in
        ["• Time left: about 12 min", "• Trigger: manual", "• Files: ", "• Failed file: deploy-4.yaml (k8s_yaml)"]
    {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("deploy-5.yaml") && !text.contains("Task ended"), "{text}");
    assert!(text.contains("• More: … and 4 more failed file(s)"), "{text}");
    let zh_text = alert_block(&a, &zh(Format::WeCom));
    for want in ["预计剩余:<font color=\"comment\">约 12 分钟", "手动", "运行中", "失败文件", "…… 另有 4 个失败文件"]
    {
        assert!(zh_text.contains(want), "missing {want:?} in\n{zh_text}");
    }
}

#[test]
fn an_unavailable_context_says_why_in_every_format_and_language() {
    let mut a = sample_notification().alerts[0].clone();
    a.context =
        Some(crate::model::AlertContext { unavailable: Some("API budget exhausted".into()), ..Default::default() });
    for format in [Format::Plain, Format::Markdown, Format::Slack, Format::DingTalk, Format::WeCom, Format::Html] {
        let text = alert_block(&a, &en(format));
        assert!(text.contains("No task details") && text.contains("API budget exhausted"), "{format:?}: {text}");
        let text = alert_block(&a, &zh(format));
        let want = match format {
            Format::Html => "无任务详情</td><td>API budget exhausted",
            Format::WeCom => "无任务详情:<font color=\"comment\">API budget exhausted",
            _ => "无任务详情:API budget exhausted",
        };
        assert!(text.contains(want), "{format:?}: {text}");
    }
    let mut partial = sample_notification().alerts[0].clone();
    partial.context.as_mut().unwrap().unavailable = Some("HSS answered 403 HSS.0013".into());
    let text = alert_block(&partial, &en(Format::Plain));
    assert!(text.contains("Task: nightly-cluster-scan") && text.contains("Task details incomplete: HSS answered 403"));
}

#[test]
fn no_context_renders_exactly_as_before() {
    let mut a = sample_notification().alerts[0].clone();
    a.context = None;
    let plain = alert_block(&a, &en(Format::Plain));
    assert!(plain.ends_with("Labels: env=prod, team=secops"), "{plain}");
    let mut ctx_less = sample_notification();
    ctx_less.alerts[0].context = None;
    let tc = context(&ctx_less, &en(Format::Markdown));
    assert!(tc.alerts.iter().all(|a| a.context.is_none()));
}

#[test]
fn a_template_sees_the_task_context_escaped_for_the_channel() {
    let mut n = sample_notification();
    n.alerts[0].context.as_mut().unwrap().task.as_mut().unwrap().task_name = "<!channel> **x**".into();
    let src = "{% for a in alerts %}{% if a.context and a.context.task %}{{ a.context.task.task_name }}|\
               {{ a.context.task.task_status }}|{{ a.context.task.start }}|{{ a.context.failed[0].name }}|\
               {{ a.context.failed[0].reason }}|{{ a.context.failed_total }}|{{ a.context.failed_more }}\
               {% endif %}{% endfor %}";
    let text = render_template(src, &context(&n, &en(Format::Slack))).unwrap();
    assert_eq!(
        text,
        "&lt;!channel&gt; ＊＊x＊＊|finished|2025-04-21 17:03 CST|prod-cce-beijing|\
         the cluster's API server did not answer within 30s|2|0"
    );
    assert_eq!(check_template(src), Ok(()));
    assert!(context(&n, &en(Format::Plain)).alerts[0].text.contains("Failed cluster: prod-cce-beijing"));
}
