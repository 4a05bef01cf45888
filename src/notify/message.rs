//! What a notification says: the title, one block per alert in English or Simplified Chinese with times in the
//! configured zone, the markup each service understands, user templates, and cutting to a service's size limit.
//!
//! Every channel renders through [`body`]: a user template when the channel has one (falling back to the built-in
//! body, with a warning, when it fails or renders nothing), cut by [`fit`] to the service's limit in the service's
//! unit so that one cycle's alerts always go out as one message ending with "… and N more" when they do not fit.
//!
//! # Template context
//!
//! A channel's `template` / `template_file` is a [minijinja](https://docs.rs/minijinja) template that renders the
//! message body; the built-in title stays where the service has a title field (Feishu card header, DingTalk
//! preview, Slack `text`, Teams, webhook `title`). WeCom has none, so a WeCom template is the whole message: start it
//! with `{{ title }}`. Printing an undefined name is an error, caught by `validate`. The template sees:
//!
//! | name | what |
//! |---|---|
//! | `title` | the built-in title, e.g. `[FIRING:2] scanwatch: no_recent_scan, stuck_running` |
//! | `language` | `en` or `zh-CN` |
//! | `status` | `firing` when any alert fires (or still fires), else `resolved` |
//! | `channel`, `notification_id`, `timezone` | the channel name, the notification's stable id, e.g. `Asia/Shanghai` |
//! | `created_at` | local time, `2025-04-22 16:04 CST` |
//! | `counts` | `total`, `firing`, `repeat`, `resolved` |
//! | `alerts` | a list; each has `fingerprint`, `rule`, `rule_title`, `severity`, `event` (`firing`, `repeat`, `resolved`), `status` (`firing` or `resolved`), `target`, `account`, `region`, `project_id`, `enterprise_project_id` (may be none), `task_type`, `task_type_human`, `labels` (a map), `summary` (English), `value`, `description` (the summary in the channel's language), `since` and `at` (local time), `since_utc` and `at_utc` (RFC 3339), `lasted` (`3h20m`), `text` (the built-in plain-text block), `context` (below, or none) |
//! | `alerts[].context` | the HSS task behind the alert: `task` (none, or `task_id`, `task_name`, `task_type`, `trigger_type`, `task_status`, `start`, `end` (local time or none), `estimated_minutes`, `scanning`, `success`, `failed`), `failed` (up to 5 of `name`, `id`, `kind`, `reason`), `failed_total`, `failed_more`, `unavailable` (why there is no context, or none). HSS's text is untrusted and comes already escaped for the channel's format, cut to 128 characters (names) or 300 (reasons) |
//!
//! Example: `{% for a in alerts %}{{ a.severity|upper }} {{ a.target }}: {{ a.description }}\n{% endfor %}`;
//! with the task: `{% if a.context and a.context.task %}task {{ a.context.task.task_name }}{% endif %}`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::{AlertNotice, Language, Notification};
use crate::alerting::Event;
use crate::model::{AlertContext, FailedResource, SeriesKey, TaskInfo, TaskType};
use crate::rules::{RuleName, Severity, human_duration};

/// How a service measures its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// UTF-8 bytes of the text itself (WeCom's 4096-byte markdown content).
    Bytes,
    /// Unicode scalar values (Slack, Discord, Telegram count characters).
    Chars,
    /// UTF-8 bytes the text takes inside a JSON string, escapes included: for services that limit the whole JSON
    /// body (Feishu, DingTalk, Teams), the text's share of the body is measured exactly.
    JsonBytes,
}

impl Unit {
    /// The size of `s` in this unit.
    pub fn measure(self, s: &str) -> usize {
        match self {
            Unit::Bytes => s.len(),
            Unit::Chars => s.chars().count(),
            Unit::JsonBytes => s.chars().map(json_char_len).sum(),
        }
    }

    fn char_size(self, c: char) -> usize {
        match self {
            Unit::Bytes => c.len_utf8(),
            Unit::Chars => 1,
            Unit::JsonBytes => json_char_len(c),
        }
    }
}

/// How serde_json writes one character inside a string: two-byte escapes for `"` `\` and the common controls,
/// `\u00XX` for the other controls, UTF-8 otherwise (it escapes neither `/` nor non-ASCII).
fn json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// A fitted text and how many of the items made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    pub text: String,
    pub shown: usize,
    pub omitted: usize,
}

/// The line that replaces the items that did not fit.
pub fn more_line(language: Language, omitted: usize) -> String {
    match (language, omitted) {
        (_, 0) => "…".to_string(),
        (Language::En, n) => format!("… and {n} more"),
        (Language::ZhCn, n) => format!("…… 另有 {n} 条"),
    }
}

/// Joins `head` and `items` (with `sep` between items, and between the head and the first item) into at most
/// `limit` units. When not everything fits, keeps the longest prefix of items that fits together with the
/// "… and N more" line; when not even the head fits, cuts the head. Never returns an empty text for a non-empty
/// input. Every channel cuts its message with this, so a storm of alerts is one message, not a lost one.
pub fn fit(head: &str, items: &[String], sep: &str, limit: usize, unit: Unit, language: Language) -> Fitted {
    let join = |k: usize| {
        let mut text = head.to_string();
        for item in &items[..k] {
            if !text.is_empty() {
                text.push_str(sep);
            }
            text.push_str(item);
        }
        text
    };
    let sep_len = unit.measure(sep);
    let head_len = unit.measure(head);
    // prefix[k] = size of head + the first k items with their separators.
    let mut prefix = Vec::with_capacity(items.len() + 1);
    prefix.push(head_len);
    for (i, item) in items.iter().enumerate() {
        let joint = if i == 0 && head.is_empty() { 0 } else { sep_len };
        prefix.push(prefix[i] + joint + unit.measure(item));
    }
    if prefix[items.len()] <= limit {
        return Fitted { text: join(items.len()), shown: items.len(), omitted: 0 };
    }
    for k in (0..items.len()).rev() {
        let more = more_line(language, items.len() - k);
        let joint = if prefix[k] == 0 { 0 } else { sep_len };
        if prefix[k] + joint + unit.measure(&more) <= limit {
            let mut text = join(k);
            if !text.is_empty() {
                text.push_str(sep);
            }
            text.push_str(&more);
            return Fitted { text, shown: k, omitted: items.len() - k };
        }
    }
    // Not even the head fits next to the "more" line: cut the head.
    let more = more_line(language, items.len());
    let joint = if items.is_empty() { "" } else { sep };
    let room = limit.saturating_sub(unit.measure(&more) + unit.measure(joint));
    let mut text = cut(head, room, unit).trim_end().to_string();
    if !text.is_empty() {
        text.push_str(joint);
    }
    text.push_str(&more);
    if unit.measure(&text) > limit {
        text = cut(&more, limit, unit).to_string();
    }
    Fitted { text, shown: 0, omitted: items.len() }
}

/// The longest prefix of `s` (on a character boundary) whose size is at most `room`.
fn cut(s: &str, room: usize, unit: Unit) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += unit.char_size(c);
        if used > room {
            return &s[..i];
        }
    }
    s
}

/// The markup a service understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No markup (webhook `message`, email text part).
    Plain,
    /// CommonMark-ish: `**bold**`, `- ` lists (Feishu card markdown, Teams TextBlock).
    Markdown,
    /// Slack mrkdwn: `*bold*`, `•` bullets, `&` `<` `>` escaped.
    Slack,
    /// DingTalk markdown: `####` headings, blank lines between blocks.
    DingTalk,
    /// WeCom markdown: `<font color>` and `>` quote lines.
    WeCom,
    /// Small inline-styled HTML (email).
    Html,
}

/// How one channel writes its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub language: Language,
    pub tz: Tz,
    pub format: Format,
}

/// A size limit in a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: usize,
    pub unit: Unit,
}

/// Counts by event, for titles and templates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: usize,
    pub firing: usize,
    pub repeat: usize,
    pub resolved: usize,
}

impl Counts {
    pub fn of(alerts: &[AlertNotice]) -> Counts {
        let mut c = Counts { total: alerts.len(), ..Counts::default() };
        for a in alerts {
            match a.event {
                Event::Firing => c.firing += 1,
                Event::Repeat => c.repeat += 1,
                Event::Resolved => c.resolved += 1,
            }
        }
        c
    }

    /// Alerts that are firing now, new or not.
    pub fn still_firing(&self) -> usize {
        self.firing + self.repeat
    }
}

/// The one-line title: `[FIRING:2] scanwatch: no_recent_scan, stuck_running (prod-cn-north-4)` or
/// `[RESOLVED] …`; in Chinese `【告警:2】…` / `【恢复】…`. The target is named when there is only one.
pub fn title(n: &Notification, language: Language) -> String {
    let test = is_test(n);
    let title = alert_title(n, language);
    match (test, language) {
        (false, _) => title,
        (true, Language::En) => format!("[TEST] {title}"),
        (true, Language::ZhCn) => format!("【测试】{title}"),
    }
}

/// The fingerprint prefix of `notify-test` messages: real fingerprints are 16 hex digits, so never equal one.
pub const TEST_FINGERPRINT_PREFIX: &str = "test-";

/// Whether `n` is a `notify-test` message.
pub fn is_test(n: &Notification) -> bool {
    !n.alerts.is_empty() && n.alerts.iter().all(|a| a.fingerprint.starts_with(TEST_FINGERPRINT_PREFIX))
}

fn alert_title(n: &Notification, language: Language) -> String {
    let counts = Counts::of(&n.alerts);
    let mut rules: Vec<&str> = Vec::new();
    let mut targets: Vec<&str> = Vec::new();
    for a in &n.alerts {
        if !rules.contains(&a.rule.as_str()) {
            rules.push(a.rule.as_str());
        }
        if !targets.contains(&a.series.target.as_str()) {
            targets.push(a.series.target.as_str());
        }
    }
    let rules = rules.join(", ");
    let firing = counts.still_firing();
    match language {
        Language::En => {
            let status = if firing > 0 { format!("[FIRING:{firing}]") } else { "[RESOLVED]".to_string() };
            let target = if targets.len() == 1 { format!(" ({})", targets[0]) } else { String::new() };
            format!("{status} scanwatch: {rules}{target}")
        }
        Language::ZhCn => {
            let status = if firing > 0 { format!("【告警:{firing}】") } else { "【恢复】".to_string() };
            let target = if targets.len() == 1 { format!("({})", targets[0]) } else { String::new() };
            format!("{status}scanwatch:{rules}{target}")
        }
    }
}

/// The title as the first line of a body, for services without a title field (WeCom) or whose title is only a
/// preview (DingTalk).
pub fn title_line(title: &str, format: Format) -> String {
    match format {
        Format::Plain => title.to_string(),
        Format::Markdown | Format::WeCom => format!("**{}**", escape(format, title)),
        Format::Slack => format!("*{}*", escape(format, title)),
        Format::DingTalk => format!("### {}", escape(format, title)),
        Format::Html => format!("<h2 style=\"margin:0 0 12px\">{}</h2>", escape(format, title)),
    }
}

/// How a format separates alert blocks.
pub fn separator(format: Format) -> &'static str {
    match format {
        Format::Html => "\n",
        _ => "\n\n",
    }
}

/// The message body for one channel: the user's template when it renders to something, else the built-in blocks,
/// cut to `budget`. A template that fails is logged (channel name and error, never the data) and replaced by the
/// built-in body: a broken template must not silence an alert.
pub fn body(
    n: &Notification,
    style: &Style,
    template: Option<&str>,
    with_title: bool,
    budget: Budget,
    channel: &str,
) -> String {
    if let Some(src) = template {
        match render_template(src, &context(n, style)) {
            Ok(text) if !text.trim().is_empty() => {
                return fit(&text, &[], "", budget.limit, budget.unit, style.language).text;
            }
            Ok(_) => tracing::warn!(channel, "message template rendered an empty body; using the built-in message"),
            Err(error) => {
                tracing::warn!(channel, %error, "message template failed; using the built-in message")
            }
        }
    }
    builtin_body(n, style, with_title, budget).text
}

/// The built-in body: the title (when asked) and one block per alert, cut to `budget`.
pub fn builtin_body(n: &Notification, style: &Style, with_title: bool, budget: Budget) -> Fitted {
    let head = if with_title { title_line(&title(n, style.language), style.format) } else { String::new() };
    let items: Vec<String> = n.alerts.iter().map(|a| alert_block(a, style)).collect();
    fit(&head, &items, separator(style.format), budget.limit, budget.unit, style.language)
}

/// One alert as a block in the style's format and language.
pub fn alert_block(a: &AlertNotice, style: &Style) -> String {
    let facts = Facts::of(a, style.language, style.tz);
    let tz = style.tz;
    // Already safe for the format: added with markup, never escaped again.
    let task = context_rows(a, style.format, style.language, &|t| local_time(t, tz));
    let f = style.format;
    let e = |s: &str| escape(f, s);
    let resolved = a.event == Event::Resolved;
    // Chinese text takes the full-width colon, with no space after it.
    let colon = if style.language == Language::ZhCn { ":" } else { ": " };
    let mut out = String::new();
    match f {
        Format::Plain => {
            out.push_str(&format!("{}\n{}", facts.heading, facts.statement));
            for (k, v) in &facts.rows {
                out.push_str(&format!("\n  {k}{colon}{v}"));
            }
            for (k, v) in &task {
                out.push_str(&format!("\n  {k}{colon}{v}"));
            }
        }
        Format::Markdown => {
            out.push_str(&format!("**{} {}**\n{}", marker(a.event), e(&facts.heading), e(&facts.statement)));
            for (k, v) in &facts.rows {
                out.push_str(&format!("\n- {k}{colon}{}", e(v)));
            }
            for (k, v) in &task {
                out.push_str(&format!("\n- {k}{colon}{v}"));
            }
        }
        Format::Slack => {
            out.push_str(&format!("*{} {}*\n{}", marker(a.event), e(&facts.heading), e(&facts.statement)));
            for (k, v) in &facts.rows {
                out.push_str(&format!("\n• {k}{colon}{}", e(v)));
            }
            for (k, v) in &task {
                out.push_str(&format!("\n• {k}{colon}{v}"));
            }
        }
        Format::DingTalk => {
            out.push_str(&format!("#### {} {}\n\n{}\n", marker(a.event), e(&facts.heading), e(&facts.statement)));
            for (k, v) in &facts.rows {
                out.push_str(&format!("\n- {k}{colon}{}", e(v)));
            }
            for (k, v) in &task {
                out.push_str(&format!("\n- {k}{colon}{v}"));
            }
        }
        Format::WeCom => {
            let colour = if resolved { "info" } else { "warning" };
            out.push_str(&format!(
                "<font color=\"{colour}\">**{}**</font>\n{}",
                e(&facts.heading),
                e(&facts.statement)
            ));
            for (k, v) in &facts.rows {
                out.push_str(&format!("\n> {k}{colon}<font color=\"comment\">{}</font>", e(v)));
            }
            for (k, v) in &task {
                out.push_str(&format!("\n> {k}{colon}<font color=\"comment\">{v}</font>"));
            }
        }
        Format::Html => {
            let colour = if resolved { "#2e7d32" } else { "#c62828" };
            out.push_str(&format!(
                "<div style=\"margin:0 0 16px\"><div style=\"font-weight:bold;color:{colour}\">{}</div><div>{}</div><table style=\"border-collapse:collapse\">",
                e(&facts.heading),
                e(&facts.statement)
            ));
            for (k, v) in &facts.rows {
                out.push_str(&format!(
                    "<tr><td style=\"padding:0 12px 0 0;color:#555\">{k}</td><td>{}</td></tr>",
                    e(v)
                ));
            }
            for (k, v) in &task {
                out.push_str(&format!("<tr><td style=\"padding:0 12px 0 0;color:#555\">{k}</td><td>{v}</td></tr>"));
            }
            out.push_str("</table></div>");
        }
    }
    out
}

fn marker(event: Event) -> &'static str {
    match event {
        Event::Firing | Event::Repeat => "🔴",
        Event::Resolved => "✅",
    }
}

/// Escapes text that comes from outside (target names, labels, HSS error messages) so that it cannot turn into
/// markup: an `<at user_id="all">` or `<!channel>` in an error message must not page a whole group.
pub fn escape(format: Format, s: &str) -> String {
    match format {
        Format::Plain => s.to_string(),
        Format::Html => s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;"),
        Format::Slack => s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"),
        // These renderers do not reliably decode entities; full-width brackets read the same and are inert.
        Format::Markdown | Format::DingTalk | Format::WeCom => s.replace('<', "＜").replace('>', "＞"),
    }
}

/// Bound on a task, cluster or file name, or an id, from HSS (characters, "…" included).
pub const MAX_NAME_CHARS: usize = 128;
/// Bound on a `failed_reason` from HSS (characters, "…" included).
pub const MAX_REASON_CHARS: usize = 300;
/// Failed clusters or files listed per alert; the rest are counted ("… and 3 more failed clusters").
pub const MAX_FAILED_LISTED: usize = 5;

/// U+200D ZERO WIDTH JOINER: invisible, and splits `@all` / `@13800138000` so no service reads it as a mention.
const ZWJ: char = '\u{200D}';

/// Text that HSS users can set — task, cluster and file names, failed reasons, ids — made safe for `format`: every
/// run of whitespace (newlines, tabs) folded to one space, other control and bidi-override characters dropped, cut
/// to `max` characters with "…", then escaped so it renders as the characters it is and never as markup, and every
/// `@` followed by a zero-width joiner so `@all`, `@所有人` or `@13800138000` cannot mention anyone.
///
/// Per format: `Plain` has no markup to escape, but a zero-width joiner after each `<` keeps `<!channel>` or
/// `<at id=all>` inert when a receiver forwards the text into a chat; `Html` escapes `& < > " '`; `Slack` escapes `& < >` (so
/// `<!channel>`, `<!here>`, `<@U…>` and `<url|text>` are inert) and turns `* ~ ` `` ` `` and word-edge `_` into
/// look-alikes (mrkdwn has no escape character); `Markdown` (Feishu card, Teams TextBlock), `DingTalk` and `WeCom`
/// turn `< >` and `* [ ] ` `` ` `` ` ~ | \` and word-edge `_` into full-width look-alikes — their renderers do not
/// reliably decode entities or backslash escapes, and a full-width bracket reads the same and is inert, so
/// `<at id=all></at>`, `<@userid>`, `<font>`, `**bold**` and `[x](http://…)` stay text.
pub fn untrusted(format: Format, text: &str, max: usize) -> String {
    let mut clean = String::with_capacity(text.len().min(max * 4));
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !clean.is_empty();
        } else if !c.is_control() && !is_bidi_control(c) {
            if space {
                clean.push(' ');
                space = false;
            }
            clean.push(c);
        }
    }
    let cut = match clean.char_indices().nth(max) {
        None => clean,
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = clean.char_indices().nth(keep).map_or(clean.len(), |(i, _)| i);
            format!("{}…", clean[..end].trim_end())
        }
    };
    let escaped = match format {
        // No markup, but the text may be forwarded into a chat: `<!channel>` and `<at …>` must not survive there.
        Format::Plain => cut.replace('<', "<\u{200D}"),
        Format::Html => escape(Format::Html, &cut).replace('\'', "&#39;"),
        Format::Slack => inert_markup(&escape(Format::Slack, &cut), &['*', '~', '`']),
        Format::Markdown | Format::DingTalk | Format::WeCom => {
            inert_markup(&escape(format, &cut), &['*', '[', ']', '`', '~', '|', '\\'])
        }
    };
    escaped.replace('@', "@\u{200D}")
}

/// Bidi embeddings, overrides and isolates: they can make a name display as something else.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') || c == ZWJ
}

/// Replaces each markup character in `always` (and `_` at a word's edge, where it would start or end emphasis;
/// inside `prod_cluster_a` it stays) with its full-width twin.
fn inert_markup(s: &str, always: &[char]) -> String {
    let chars: Vec<char> = s.chars().collect();
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric());
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let edge_underscore = c == '_' && !(i > 0 && word(chars.get(i - 1)) && word(chars.get(i + 1)));
            if always.contains(&c) || edge_underscore { full_width(c) } else { c }
        })
        .collect()
}

/// The full-width form of an ASCII punctuation character (U+FF01..U+FF5E mirror U+0021..U+007E).
fn full_width(c: char) -> char {
    match c {
        '!'..='~' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
        c => c,
    }
}

/// The task context of an alert as labelled rows, in the channel's language, every value already safe for
/// `format` (HSS's text through [`untrusted`], so callers add markup around the values but must not escape them
/// again). `time` writes a time the way the rest of the message does (one zone per message). No context: no rows.
pub fn context_rows(
    a: &AlertNotice,
    format: Format,
    language: Language,
    time: &dyn Fn(DateTime<Utc>) -> String,
) -> Vec<(&'static str, String)> {
    let Some(ctx) = &a.context else { return Vec::new() };
    let zh = language == Language::ZhCn;
    let label = |en: &'static str, cn: &'static str| if zh { cn } else { en };
    let name = |s: &str| untrusted(format, s, MAX_NAME_CHARS);
    let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).map(time);
    let task_type = ctx.task.as_ref().map_or(a.series.task_type, |t| t.task_type);
    let files = task_type == TaskType::IacScan;
    let mut rows = Vec::new();
    if let Some(t) = &ctx.task {
        let task = if zh {
            format!("{}(ID {})", name(&t.task_name), name(&t.task_id))
        } else {
            format!("{} (id {})", name(&t.task_name), name(&t.task_id))
        };
        rows.push((label("Task", "任务"), task));
        let trigger = match (t.trigger_type.as_str(), zh) {
            ("manual", false) => "manual".to_string(),
            ("manual", true) => "手动".to_string(),
            ("schedule", false) => "scheduled".to_string(),
            ("schedule", true) => "定时".to_string(),
            (other, _) => name(other),
        };
        rows.push((label("Trigger", "触发方式"), trigger));
        let status = match (t.task_status.as_str(), zh) {
            ("ready", true) => "待执行".to_string(),
            ("running", true) => "运行中".to_string(),
            ("finished", true) => "已完成".to_string(),
            (other, _) => name(other),
        };
        rows.push((label("Task status", "任务状态"), status));
        if let Some(start) = t.start_time.and_then(at) {
            rows.push((label("Task started", "任务开始"), start));
        }
        if let Some(end) = t.end_time.and_then(at) {
            rows.push((label("Task ended", "任务结束"), end));
        }
        if t.task_status == "running"
            && let Some(minutes) = t.estimated_minutes
        {
            rows.push((
                label("Time left", "预计剩余"),
                if zh { format!("约 {minutes} 分钟") } else { format!("about {minutes} min") },
            ));
        }
        let counts = if zh {
            format!("扫描中 {},成功 {},失败 {}", t.scanning, t.success, t.failed)
        } else {
            format!("{} scanning, {} succeeded, {} failed", t.scanning, t.success, t.failed)
        };
        rows.push((if files { label("Files", "文件") } else { label("Clusters", "集群") }, counts));
    }
    let failed_label =
        if files { label("Failed file", "失败文件") } else { label("Failed cluster", "失败集群") };
    let listed = ctx.failed.len().min(MAX_FAILED_LISTED);
    for r in &ctx.failed[..listed] {
        let what = match &r.kind {
            Some(kind) if zh => format!("{}({})", name(&r.name), name(kind)),
            Some(kind) => format!("{} ({})", name(&r.name), name(kind)),
            None => name(&r.name),
        };
        let reason = untrusted(format, &r.failed_reason, MAX_REASON_CHARS);
        rows.push((failed_label, if zh { format!("{what}:{reason}") } else { format!("{what}: {reason}") }));
    }
    let more = ctx.failed_total.max(ctx.failed.len() as u64).saturating_sub(listed as u64);
    if more > 0 {
        let what = match (files, zh) {
            (true, true) => format!("…… 另有 {more} 个失败文件"),
            (false, true) => format!("…… 另有 {more} 个失败集群"),
            (true, false) => format!("… and {more} more failed file(s)"),
            (false, false) => format!("… and {more} more failed cluster(s)"),
        };
        rows.push((label("More", "更多"), what));
    }
    if let Some(reason) = &ctx.unavailable {
        let l = if ctx.task.is_some() {
            label("Task details incomplete", "任务详情不完整")
        } else {
            label("No task details", "无任务详情")
        };
        rows.push((l, untrusted(format, reason, MAX_REASON_CHARS)));
    }
    rows
}

/// What an on-call person needs about one alert, in one language; formats only add markup.
struct Facts {
    heading: String,
    statement: String,
    rows: Vec<(&'static str, String)>,
}

impl Facts {
    fn of(a: &AlertNotice, language: Language, tz: Tz) -> Facts {
        let s = &a.series;
        let since = local_time(a.since, tz);
        let lasted = human_duration(a.lasted());
        let labels = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
        let zh = language == Language::ZhCn;
        let heading = format!(
            "{} · {} · {} · {}/{}",
            event_word(a.event, language),
            severity_word(a.severity, language),
            rule_title(a.rule, language),
            s.target,
            s.task_type
        );
        let statement = describe(a, language);
        let mut rows: Vec<(&'static str, String)> = vec![
            (if zh { "目标" } else { "Target" }, s.target.clone()),
            (if zh { "账号" } else { "Account" }, s.account.clone()),
            (if zh { "区域" } else { "Region" }, s.region.clone()),
            (if zh { "项目" } else { "Project" }, s.project_id.clone()),
        ];
        if let Some(eps) = &s.enterprise_project_id {
            rows.push((if zh { "企业项目" } else { "Enterprise project" }, eps.clone()));
        }
        rows.push((if zh { "任务类型" } else { "Task type" }, task_type_human(s.task_type, language).to_string()));
        rows.push((if zh { "开始时间" } else { "Since" }, since));
        match a.event {
            Event::Firing => {}
            Event::Repeat => rows.push((
                if zh { "状态" } else { "Status" },
                if zh { format!("仍在告警,已持续 {lasted}") } else { format!("still firing for {lasted}") },
            )),
            Event::Resolved => rows.push((
                if zh { "状态" } else { "Status" },
                if zh {
                    format!("已恢复,告警持续 {lasted}(恢复于 {})", local_time(a.at, tz))
                } else {
                    format!("resolved after {lasted} (at {})", local_time(a.at, tz))
                },
            )),
        }
        if !labels.is_empty() {
            rows.push((if zh { "标签" } else { "Labels" }, labels));
        }
        Facts { heading, statement, rows }
    }
}

/// `2025-04-22 16:04 CST` in the channel's time zone.
pub fn local_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

fn event_word(event: Event, language: Language) -> &'static str {
    match (language, event) {
        (Language::En, Event::Firing) => "FIRING",
        (Language::En, Event::Repeat) => "STILL FIRING",
        (Language::En, Event::Resolved) => "RESOLVED",
        (Language::ZhCn, Event::Firing) => "告警",
        (Language::ZhCn, Event::Repeat) => "持续告警",
        (Language::ZhCn, Event::Resolved) => "已恢复",
    }
}

fn severity_word(severity: Severity, language: Language) -> &'static str {
    match (language, severity) {
        (Language::En, s) => s.as_str(),
        (Language::ZhCn, Severity::Critical) => "严重",
        (Language::ZhCn, Severity::Warning) => "警告",
        (Language::ZhCn, Severity::Info) => "提示",
    }
}

/// The rule's name as people read it: the config name in English, a Chinese name with the config name after it.
pub fn rule_title(rule: RuleName, language: Language) -> String {
    match language {
        Language::En => rule.as_str().to_string(),
        Language::ZhCn => {
            let name = match rule {
                RuleName::NoRecentScan => "长时间未扫描",
                RuleName::StuckRunning => "扫描任务卡住",
                RuleName::TotalStalled => "任务总数停滞",
                RuleName::PollFailing => "HSS 接口轮询失败",
                RuleName::ScanFailures => "扫描任务部分失败",
                RuleName::ChannelFailing => "告警通道发送失败",
            };
            format!("{name}({})", rule.as_str())
        }
    }
}

fn task_type_human(t: TaskType, language: Language) -> &'static str {
    match (language, t) {
        (Language::En, t) => t.human(),
        (Language::ZhCn, TaskType::ClusterScan) => "集群扫描",
        (Language::ZhCn, TaskType::IacScan) => "IaC 扫描",
    }
}

/// What is wrong, in plain words with the value: the rule's English summary, or a Chinese sentence built from the
/// rule, the value and the limit named in the summary.
pub fn describe(a: &AlertNotice, language: Language) -> String {
    if language == Language::En {
        return a.summary.clone();
    }
    let scan = task_type_human(a.series.task_type, language);
    let v = &a.value;
    match a.rule {
        RuleName::NoRecentScan if v == "never" => format!("{scan}从未启动过任务"),
        RuleName::NoRecentScan => match after_word(&a.summary, "limit ") {
            Some(limit) => format!("{scan}已 {v} 未启动新任务(阈值 {limit})"),
            None => format!("{scan}已 {v} 未启动新任务"),
        },
        RuleName::StuckRunning => match after_word(&a.summary, "limit ") {
            Some(limit) => format!("{scan}任务已运行 {v} 且没有新任务启动(阈值 {limit})"),
            None => format!("{scan}任务已运行 {v} 且没有新任务启动"),
        },
        RuleName::TotalStalled => match after_word(&a.summary, "window ") {
            Some(window) => format!("{scan}任务总数已 {v} 没有增长(窗口 {window})"),
            None => format!("{scan}任务总数已 {v} 没有增长"),
        },
        RuleName::PollFailing => {
            let failures = v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok());
            let over = v.split_once(" over ").map(|(_, d)| d);
            let what = if a.summary.starts_with("HSS rejects the account's credentials") {
                "HSS 拒绝了账号凭据".to_string()
            } else if let Some(rest) = a.summary.strip_prefix("HSS denies access to ") {
                // "project X (enterprise project Y): …" → 项目 X(企业项目 Y)
                let what = rest.split_once(": ").map_or(rest, |(w, _)| w);
                let what = what.replacen("enterprise project ", "企业项目 ", 1).replacen("project ", "项目 ", 1);
                format!("HSS 拒绝访问{what}(权限不足)")
            } else {
                match (failures, over) {
                    (Some(n), Some(d)) => format!("HSS 接口轮询已连续失败 {n} 次,持续 {d}"),
                    (Some(n), None) => format!("HSS 接口轮询已连续失败 {n} 次"),
                    _ => "HSS 接口轮询失败".to_string(),
                }
            };
            match a.summary.split_once(": ") {
                Some((_, detail)) => format!("{what};错误:{detail}"),
                None => what,
            }
        }
        RuleName::ScanFailures => {
            let what = if a.series.task_type == TaskType::ClusterScan { "集群" } else { "文件" };
            let total = after_word(&a.summary, "of ").and_then(|t| t.split_whitespace().next().map(str::to_string));
            let failed = v.split_whitespace().next().unwrap_or(v);
            match total {
                Some(total) => format!("最近完成的{scan}任务在 {total} 个{what}中有 {failed} 个扫描失败"),
                None => format!("最近完成的{scan}任务有 {failed} 个{what}扫描失败"),
            }
        }
        RuleName::ChannelFailing => match a.summary.split_once(": ") {
            Some((_, detail)) => format!("告警通道 {} 无法送达通知;错误:{detail}", a.series.target),
            None => format!("告警通道 {} 无法送达通知", a.series.target),
        },
    }
}

/// The token after the last `word` in `text` (`limit 24h` → `24h`).
fn after_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let start = text.rfind(word)? + word.len();
    let rest = &text[start..];
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The data a user template sees (see the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct TemplateContext {
    pub title: String,
    pub language: &'static str,
    pub status: &'static str,
    pub channel: String,
    pub notification_id: String,
    pub timezone: String,
    pub created_at: String,
    pub counts: Counts,
    pub alerts: Vec<TemplateAlert>,
}

/// One alert as a user template sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateAlert {
    pub fingerprint: String,
    pub rule: &'static str,
    pub rule_title: String,
    pub severity: &'static str,
    pub event: &'static str,
    pub status: &'static str,
    pub target: String,
    pub account: String,
    pub region: String,
    pub project_id: String,
    pub enterprise_project_id: Option<String>,
    pub task_type: &'static str,
    pub task_type_human: &'static str,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub value: String,
    pub description: String,
    pub since: String,
    pub since_utc: String,
    pub at: String,
    pub at_utc: String,
    pub lasted: String,
    pub text: String,
    /// The task behind the alert, or `none`.
    pub context: Option<TemplateTaskContext>,
}

/// An alert's task context as a user template sees it. Every text from HSS is already made safe for the channel's
/// format by [`untrusted`] (names cut to [`MAX_NAME_CHARS`], reasons to [`MAX_REASON_CHARS`]), so a template can
/// print it as it is; at most [`MAX_FAILED_LISTED`] failed resources are listed.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateTaskContext {
    pub task: Option<TemplateTask>,
    pub failed: Vec<TemplateFailed>,
    /// How many failed in all; `failed_more` of them are not listed.
    pub failed_total: u64,
    pub failed_more: u64,
    /// Why there is no (complete) context.
    pub unavailable: Option<String>,
}

/// The task behind an alert, for templates.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateTask {
    pub task_id: String,
    pub task_name: String,
    pub task_type: &'static str,
    /// `manual` | `schedule`, as HSS sent it.
    pub trigger_type: String,
    /// `ready` | `running` | `finished`, as HSS sent it.
    pub task_status: String,
    /// Local time, like `since`.
    pub start: Option<String>,
    pub end: Option<String>,
    pub estimated_minutes: Option<i64>,
    pub scanning: u64,
    pub success: u64,
    pub failed: u64,
}

/// A failed cluster or file, for templates.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateFailed {
    pub name: String,
    pub id: Option<String>,
    pub kind: Option<String>,
    pub reason: String,
}

impl TemplateTaskContext {
    fn of(ctx: &crate::model::AlertContext, style: &Style) -> TemplateTaskContext {
        let name = |s: &str| untrusted(style.format, s, MAX_NAME_CHARS);
        let at = |ms: Option<i64>| ms.and_then(DateTime::<Utc>::from_timestamp_millis).map(|t| local_time(t, style.tz));
        let failed: Vec<TemplateFailed> = ctx
            .failed
            .iter()
            .take(MAX_FAILED_LISTED)
            .map(|r| TemplateFailed {
                name: name(&r.name),
                id: r.id.as_deref().map(name),
                kind: r.kind.as_deref().map(name),
                reason: untrusted(style.format, &r.failed_reason, MAX_REASON_CHARS),
            })
            .collect();
        let failed_total = ctx.failed_total.max(ctx.failed.len() as u64);
        TemplateTaskContext {
            task: ctx.task.as_ref().map(|t| TemplateTask {
                task_id: name(&t.task_id),
                task_name: name(&t.task_name),
                task_type: t.task_type.as_str(),
                trigger_type: name(&t.trigger_type),
                task_status: name(&t.task_status),
                start: at(t.start_time),
                end: at(t.end_time),
                estimated_minutes: t.estimated_minutes,
                scanning: t.scanning,
                success: t.success,
                failed: t.failed,
            }),
            failed_more: failed_total - failed.len() as u64,
            failed,
            failed_total,
            unavailable: ctx.unavailable.as_deref().map(|u| untrusted(style.format, u, MAX_REASON_CHARS)),
        }
    }
}

fn language_code(language: Language) -> &'static str {
    match language {
        Language::En => "en",
        Language::ZhCn => "zh-CN",
    }
}

/// The template context of one notification.
pub fn context(n: &Notification, style: &Style) -> TemplateContext {
    let counts = Counts::of(&n.alerts);
    let plain = Style { format: Format::Plain, ..*style };
    TemplateContext {
        title: title(n, style.language),
        language: language_code(style.language),
        status: if counts.still_firing() > 0 { "firing" } else { "resolved" },
        channel: n.channel.clone(),
        notification_id: n.id.clone(),
        timezone: style.tz.name().to_string(),
        created_at: local_time(n.created_at, style.tz),
        counts,
        alerts: n
            .alerts
            .iter()
            .map(|a| TemplateAlert {
                fingerprint: a.fingerprint.clone(),
                rule: a.rule.as_str(),
                rule_title: rule_title(a.rule, style.language),
                severity: a.severity.as_str(),
                event: a.event.as_str(),
                status: if a.event == Event::Resolved { "resolved" } else { "firing" },
                target: a.series.target.clone(),
                account: a.series.account.clone(),
                region: a.series.region.clone(),
                project_id: a.series.project_id.clone(),
                enterprise_project_id: a.series.enterprise_project_id.clone(),
                task_type: a.series.task_type.as_str(),
                task_type_human: task_type_human(a.series.task_type, style.language),
                labels: a.labels.clone(),
                summary: a.summary.clone(),
                value: a.value.clone(),
                description: describe(a, style.language),
                since: local_time(a.since, style.tz),
                since_utc: a.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                at: local_time(a.at, style.tz),
                at_utc: a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                lasted: human_duration(a.lasted()),
                text: alert_block(a, &plain),
                context: a.context.as_ref().map(|c| TemplateTaskContext::of(c, style)),
            })
            .collect(),
    }
}

/// Instructions a template may run per render: plenty for thousands of alerts, and a bound on a runaway loop.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// Renders a user template against a context; the error is minijinja's, with line and cause.
pub fn render_template(src: &str, ctx: &TemplateContext) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.render_str(src, minijinja::Value::from(minijinja::value::Serde(ctx))).map_err(|e| e.to_string())
}

/// Checks a user template for `validate`: it must render against sample data (a firing and a resolved alert, in
/// both languages) to a non-empty body.
pub fn check_template(src: &str) -> Result<(), String> {
    let n = sample_notification();
    for language in [Language::En, Language::ZhCn] {
        let style = Style { language, tz: chrono_tz::Asia::Shanghai, format: Format::Markdown };
        let text = render_template(src, &context(&n, &style))?;
        if text.trim().is_empty() {
            return Err("the template renders an empty message for the sample alerts".to_string());
        }
    }
    Ok(())
}

/// Two alerts with every field filled: what `validate` and `notify-test` render.
pub fn sample_notification() -> Notification {
    // 2025-04-22 16:33:20 UTC, minutes from then.
    let at = |min: i64| DateTime::<Utc>::from_timestamp(1_745_339_600 + min * 60, 0).unwrap_or_default();
    let series = |task_type| SeriesKey {
        target: "prod-cn-north-4".to_string(),
        account: "prod".to_string(),
        region: "cn-north-4".to_string(),
        project_id: "0123456789abcdef0123456789abcdef".to_string(),
        enterprise_project_id: Some("all_granted_eps".to_string()),
        task_type,
    };
    let labels: BTreeMap<String, String> =
        [("env", "prod"), ("team", "secops")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Notification {
        id: "sample-notification".to_string(),
        channel: "sample".to_string(),
        created_at: at(0),
        alerts: vec![
            AlertNotice {
                fingerprint: "3f2a9c1d0e8b7a65".to_string(),
                rule: RuleName::NoRecentScan,
                severity: Severity::Critical,
                event: Event::Firing,
                series: series(TaskType::ClusterScan),
                labels: labels.clone(),
                summary: "no cluster scan has started for 31h; limit 24h".to_string(),
                value: "31h".to_string(),
                since: at(0),
                at: at(0),
                context: Some(sample_context(at(-1890).timestamp_millis())),
            },
            AlertNotice {
                fingerprint: "9b8a7c6d5e4f3a21".to_string(),
                rule: RuleName::StuckRunning,
                severity: Severity::Warning,
                event: Event::Resolved,
                series: series(TaskType::IacScan),
                labels,
                summary: "1 IaC scan task(s) running for 2h10m with no new task started (the latest task started \
                          2025-04-22 05:33 UTC); limit 2h"
                    .to_string(),
                value: "2h10m".to_string(),
                since: at(-240),
                at: at(-40),
                context: None,
            },
        ],
        group_labels: Default::default(),
    }
}

/// The sample's task context: a finished scheduled cluster scan that started at `start_ms`, 2 of its 5 clusters
/// failed.
fn sample_context(start_ms: i64) -> AlertContext {
    AlertContext {
        task: Some(TaskInfo {
            task_id: "2f6c1b7e-5d4a-4e1b-9c3f-8a7b6c5d4e3f".to_string(),
            task_name: "nightly-cluster-scan".to_string(),
            task_type: TaskType::ClusterScan,
            trigger_type: "schedule".to_string(),
            task_status: "finished".to_string(),
            start_time: Some(start_ms),
            end_time: Some(start_ms + 42 * 60_000),
            estimated_minutes: None,
            scanning: 0,
            success: 3,
            failed: 2,
        }),
        failed: vec![
            FailedResource {
                name: "prod-cce-beijing".to_string(),
                id: Some("6f0e2b1c-3d4a-11ef-8d2b-0255ac100b07".to_string()),
                kind: Some("cce".to_string()),
                failed_reason: "the cluster's API server did not answer within 30s".to_string(),
            },
            FailedResource {
                name: "idc-edge-01".to_string(),
                id: Some("a1b2c3d4-0000-4000-8000-000000000001".to_string()),
                kind: Some("self_built_idc".to_string()),
                failed_reason: "the HSS agent on the cluster is offline".to_string(),
            },
        ],
        failed_total: 2,
        unavailable: None,
    }
}

/// What `notify-test` sends: one alert that says it is a test — severity info, label `test="true"`, a fingerprint
/// no real alert can have, `[TEST]` in the title — about `series` (a configured target) or a made-up target.
pub fn test_notification(series: Option<(SeriesKey, BTreeMap<String, String>)>, now: DateTime<Utc>) -> Notification {
    let (series, mut labels) = series.unwrap_or_else(|| {
        let key = SeriesKey {
            target: "scanwatch-notify-test".to_string(),
            account: "notify-test".to_string(),
            region: "-".to_string(),
            project_id: "-".to_string(),
            enterprise_project_id: None,
            task_type: TaskType::ClusterScan,
        };
        (key, BTreeMap::new())
    });
    labels.insert("test".to_string(), "true".to_string());
    let nonce: u64 = rand::random();
    Notification {
        id: "notify-test".to_string(),
        channel: "notify-test".to_string(),
        created_at: now,
        alerts: vec![AlertNotice {
            fingerprint: format!("{TEST_FINGERPRINT_PREFIX}{nonce:016x}"),
            rule: RuleName::NoRecentScan,
            severity: Severity::Info,
            event: Event::Firing,
            series,
            labels,
            summary: "test message from `scanwatch notify-test`: this channel works; nothing is wrong".to_string(),
            value: "test".to_string(),
            since: now,
            at: now,
            context: None,
        }],
        group_labels: Default::default(),
    }
}

#[cfg(test)]
mod tests;
