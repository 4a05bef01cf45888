//! The `email` channel: one SMTP submission per notification over lettre's pooled tokio transport.
//!
//! It owns the mail itself — subject, `multipart/alternative` text + HTML bodies, the threading and automation
//! headers — and the classification of what the SMTP server or the TLS layer answered. Threading: every mail's
//! `Message-ID` is `<{notification uid}@scanwatch.{from-domain}>`, the same on every retry of one notification (the
//! uid is the webhook channel's `webhook-id`), so a mail sent twice — its answer lost, or the process killed before
//! the attempt was recorded — is one message to mail clients and archives. Each mail names a synthetic root
//! `<alert-{fingerprint}@scanwatch.{from-domain}>` of its first alert in both `In-Reply-To` and `References`, so
//! mail clients gather one alert's firing, reminders and resolution into one thread.

use std::error::Error as _;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{self, AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::settings::{Checker, KindConfig, KindSettings, is_loopback_host};
use crate::alerting::Event;
use crate::model::{TaskType, excerpt};
use crate::notify::message::{Format, context_rows};
use crate::notify::{AlertNotice, Channel, Delivered, DeliveryError, EmailSettings, EmailTls, Language, Notification};
use crate::rules::{Severity, human_duration};
use crate::secret::sources::{SecretContext, SecretKeys};
use crate::secret::{REDACTED, Secret};
use serde::Deserialize;

/// The keys of a `kind = "email"` channel: the SMTP relay, its login, and the mail's sender and recipients.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub smtp_host: Option<String>,
    pub smtp_port: Option<i64>,
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub ca_file: Option<String>,
}

impl KindConfig for EmailConfig {
    type Settings = EmailSettings;
    /// SMTP takes a few round trips.
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn validate(&self, c: &mut Checker<'_>, ctx: &SecretContext<'_>, timeout: Duration) -> Option<EmailSettings> {
        let raw = self;
        let host = match raw.smtp_host.as_deref().map(str::trim) {
            Some(h) if !h.is_empty() => h.to_string(),
            Some(_) => {
                c.problem("smtp_host", "must not be empty");
                String::new()
            }
            None => {
                c.problem("smtp_host", "is required, e.g. `smtp.example.com`");
                String::new()
            }
        };
        let tls =
            match raw.tls.as_deref() {
                Some("implicit") => EmailTls::Implicit,
                Some("starttls") => EmailTls::Starttls,
                Some("none") => EmailTls::None,
                Some(other) => {
                    c.problem(
                "tls",
                format!("`{other}` is not a TLS mode; use implicit (port 465), starttls (587) or none (loopback only)"),
            );
                    EmailTls::Implicit
                }
                None if raw.smtp_port == Some(587) => EmailTls::Starttls,
                None => EmailTls::Implicit,
            };
        let default_port = match tls {
            EmailTls::Implicit => 465,
            EmailTls::Starttls => 587,
            EmailTls::None => 25,
        };
        let port = match raw.smtp_port {
            None => default_port,
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => p,
                _ => {
                    c.problem("smtp_port", format!("`{p}` is not a port number (1 to 65535)"));
                    default_port
                }
            },
        };
        match (tls, port) {
            (EmailTls::Implicit, 587) => {
                c.warning("tls", "port 587 usually speaks STARTTLS; set tls = \"starttls\" if the connection fails")
            }
            (EmailTls::Starttls, 465) => {
                c.warning("tls", "port 465 usually speaks implicit TLS; set tls = \"implicit\" if the connection fails")
            }
            _ => {}
        }
        if tls == EmailTls::None && !host.is_empty() && !is_loopback_host(&host) {
            c.problem("tls", "`none` sends mail and the SMTP password unencrypted and is allowed only to a loopback host; use implicit or starttls");
        }
        let password_keys = SecretKeys::of(
            "password",
            raw.password.as_deref(),
            raw.password_env.as_deref(),
            raw.password_file.as_deref(),
        );
        let password_given = password_keys.given();
        let password = c.optional_secret(ctx, password_keys);
        let username = raw.username.clone();
        match (&username, password_given) {
            (Some(u), _) if u.trim().is_empty() => c.problem("username", "must not be empty"),
            (Some(_), false) => {
                c.problem("password", "is required with username: set `password_env` or `password_file`")
            }
            (None, true) => c.problem("username", "is required with a password"),
            _ => {}
        }
        let from = match raw.from.as_deref().map(str::trim) {
            Some(f) if looks_like_address(f) => f.to_string(),
            Some(f) => {
                c.problem("from", format!("`{f}` is not an email address, e.g. `scanwatch <scanwatch@example.com>`"));
                String::new()
            }
            None => {
                c.problem("from", "is required, e.g. `scanwatch <scanwatch@example.com>`");
                String::new()
            }
        };
        let mut to = Vec::new();
        match &raw.to {
            None => c.problem("to", "is required: a list of recipients, e.g. [\"secops@example.com\"]"),
            Some(list) if list.is_empty() => c.problem("to", "lists no recipient"),
            Some(list) => {
                for (i, addr) in list.iter().enumerate() {
                    if looks_like_address(addr.trim()) {
                        to.push(addr.trim().to_string());
                    } else {
                        c.problem(&format!("to[{i}]"), format!("`{addr}` is not an email address"));
                    }
                }
            }
        }
        let ca_file = raw.ca_file.as_deref().and_then(|f| {
            let path = ctx.config_dir.join(f);
            if path.is_file() {
                Some(path)
            } else {
                c.problem("ca_file", format!("{} is not a readable file", path.display()));
                None
            }
        });
        Some(EmailSettings {
            smtp_host: host,
            smtp_port: port,
            tls,
            username,
            password: password.map(|p| p.value),
            from,
            to,
            ca_file,
            timeout,
        })
    }
}

/// `a@b.c` or `Name <a@b.c>`: one `@` with something on both sides. The SMTP library does the real parsing.
fn looks_like_address(s: &str) -> bool {
    let addr = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => &s[i + 1..s.len() - 1],
        _ => s,
    };
    match addr.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !addr.contains(char::is_whitespace)
        }
        None => false,
    }
}

impl KindSettings for EmailSettings {
    /// The application builds email channels itself ([`EmailChannel::new`]): they need no HTTP client.
    fn build(&self, _: &dyn Fn(&url::Url) -> super::Common) -> Option<std::sync::Arc<dyn Channel>> {
        None
    }
}

/// `config show`: the settings with the password redacted (the timeout is the channel's).
impl serde::Serialize for EmailSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            smtp_host: &'a str,
            smtp_port: u16,
            tls: EmailTls,
            username: &'a Option<String>,
            password: &'a Option<Secret>,
            from: &'a str,
            to: &'a [String],
            ca_file: &'a Option<std::path::PathBuf>,
        }
        Shown {
            smtp_host: &self.smtp_host,
            smtp_port: self.smtp_port,
            tls: self.tls,
            username: &self.username,
            password: &self.password,
            from: &self.from,
            to: &self.to,
            ca_file: &self.ca_file,
        }
        .serialize(s)
    }
}

/// Servers close idle submission sessions after a while; a pooled connection older than this is dropped rather than
/// reused (lettre checks every idle period, so a connection lives at most twice this long).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// One dispatcher sends to one channel at a time; a second connection covers an overlapping `notify-test`.
const POOL_MAX_SIZE: u32 = 2;
/// Alerts shown in full; the rest are counted ("and 12 more"), so a mass outage still gives a mail that opens
/// (Gmail clips bodies past ~100 KB).
const MAX_DETAILED: usize = 50;
/// How much of a server's answer goes into a delivery record.
const DETAIL_MAX: usize = 300;

/// RFC 3834: tells vacation responders and ticket systems not to answer.
const AUTO_SUBMITTED: HeaderName = HeaderName::new_from_ascii_str("Auto-Submitted");
/// Exchange's equivalent of `Auto-Submitted`.
const AUTO_RESPONSE_SUPPRESS: HeaderName = HeaderName::new_from_ascii_str("X-Auto-Response-Suppress");

/// Delivers notifications as mail through one SMTP submission server.
pub struct EmailChannel {
    name: String,
    language: Language,
    /// Times in the body are shown in this zone.
    tz: Tz,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `scanwatch.{from-domain}`: the right-hand side of every Message-ID and thread root.
    id_domain: String,
    /// `host:port`, for error messages.
    endpoint: String,
    tls: EmailTls,
    /// Bounds the whole conversation: lettre's own timeout covers only the connect.
    timeout: Duration,
    /// Kept only to scrub it from any error text a server might echo.
    password: Option<Secret>,
    builder: AsyncSmtpTransportBuilder,
    /// The connection pool, built on the first send (lettre's pool spawns a tokio task when it is created) and
    /// thrown away after a send was cut off: see [`DiscardUnlessFinished`].
    transport: Mutex<Option<AsyncSmtpTransport<Tokio1Executor>>>,
}

impl EmailChannel {
    /// Checks the settings and prepares the transport; reads `ca_file` but opens no connection. The error names
    /// the offending setting.
    pub fn new(name: String, settings: EmailSettings, language: Language, tz: Tz) -> Result<EmailChannel, String> {
        let from: Mailbox = settings.from.parse().map_err(|e| {
            format!("from: {e}; expected e.g. `scanwatch <scanwatch@example.com>`, got {:?}", settings.from)
        })?;
        if settings.to.is_empty() {
            return Err("to: at least one recipient is needed, e.g. [\"secops@example.com\"]".to_string());
        }
        let to = settings
            .to
            .iter()
            .enumerate()
            .map(|(i, t)| t.parse::<Mailbox>().map_err(|e| format!("to[{i}]: {e}; got {t:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let id_domain = format!("scanwatch.{}", sanitize_id(&from.email.domain().to_ascii_lowercase()));

        let tls = match settings.tls {
            EmailTls::None => {
                if !is_loopback(&settings.smtp_host) {
                    return Err(format!(
                        "tls: \"none\" sends mail and password in clear text, so it is allowed only to a loopback \
                         smtp_host; got {:?} (use \"implicit\" on 465 or \"starttls\" on 587)",
                        settings.smtp_host
                    ));
                }
                Tls::None
            }
            EmailTls::Implicit => Tls::Wrapper(tls_parameters(&settings)?),
            EmailTls::Starttls => Tls::Required(tls_parameters(&settings)?),
        };

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.smtp_host.clone())
            .port(settings.smtp_port)
            .tls(tls)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(POOL_MAX_SIZE).idle_timeout(POOL_IDLE_TIMEOUT));
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
            }
            (None, None) => {}
            (Some(_), None) => return Err("password: username is set, so a password is needed".to_string()),
            (None, Some(_)) => return Err("username: password is set, so a username is needed".to_string()),
        }

        Ok(EmailChannel {
            name,
            language,
            tz,
            from,
            to,
            id_domain,
            endpoint: format!("{}:{}", settings.smtp_host, settings.smtp_port),
            tls: settings.tls,
            timeout: settings.timeout,
            password: settings.password.filter(|p| !p.is_empty()),
            builder,
            transport: Mutex::new(None),
        })
    }

    /// The mail for `n`; the same Message-ID on every attempt (see the module docs).
    fn message(&self, n: &Notification) -> Result<Message, DeliveryError> {
        let first = n
            .alerts
            .first()
            .ok_or_else(|| DeliveryError::Permanent { reason: "the notification lists no alert".to_string() })?;
        let root = format!("<alert-{}@{}>", sanitize_id(&first.fingerprint), self.id_domain);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject(n, self.language))
            .date(SystemTime::from(n.created_at))
            .message_id(Some(format!("<{}@{}>", sanitize_id(&n.id), self.id_domain)))
            .in_reply_to(root.clone())
            .references(root)
            .raw_header(HeaderValue::new(AUTO_SUBMITTED, "auto-generated".to_string()))
            .raw_header(HeaderValue::new(AUTO_RESPONSE_SUPPRESS, "All".to_string()));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let body = MultiPart::alternative_plain_html(
            text_body(n, self.language, self.tz),
            html_body(n, &self.name, self.language, self.tz),
        );
        builder.multipart(body).map_err(|e| DeliveryError::Permanent { reason: format!("cannot build the mail: {e}") })
    }

    /// Turns lettre's error into the dispatcher's verdict, with a hint where the fix is in the settings.
    fn classify(&self, e: &smtp::Error) -> DeliveryError {
        let text = self.scrub(&e.to_string());
        let at = &self.endpoint;
        if e.is_transient() {
            return DeliveryError::Retryable { reason: format!("{at} deferred: {text}"), retry_after: None };
        }
        if e.is_permanent() {
            let hint = match e.status().map(u16::from) {
                Some(535) => " (authentication failed: check username and password)",
                Some(530) => " (the server wants authentication: set username and password_env)",
                _ => "",
            };
            return DeliveryError::Permanent { reason: format!("{at} refused: {text}{hint}") };
        }
        if let Some(tls) = rustls_error(e) {
            return DeliveryError::Permanent { reason: format!("{at}: TLS failed: {tls}; {}", self.tls_hint(tls)) };
        }
        if e.is_tls() {
            return DeliveryError::Permanent { reason: format!("{at}: TLS setup failed: {text}") };
        }
        if e.is_client() {
            let reason = if text.contains("STARTTLS") {
                format!(
                    "{at} does not offer STARTTLS, which tls = \"starttls\" requires (port 465 wants tls = \"implicit\")"
                )
            } else if text.contains("authentication mechanism") {
                format!("{at} offers no AUTH PLAIN or LOGIN on this connection, but username and password are set")
            } else {
                format!("{at}: {text}")
            };
            return DeliveryError::Permanent { reason };
        }
        DeliveryError::Retryable { reason: format!("{at}: {text}"), retry_after: None }
    }

    fn tls_hint(&self, e: &rustls::Error) -> String {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                "the server's certificate is not trusted: put its CA in ca_file (PEM)".to_string()
            }
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                let host = self.endpoint.rsplit_once(':').map_or(self.endpoint.as_str(), |(h, _)| h);
                format!("the server's certificate is not issued for smtp_host {host:?}")
            }
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                "the server's certificate has expired".to_string()
            }
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => match self.tls {
                EmailTls::Implicit => {
                    "the server does not speak TLS on this port: port 587 wants tls = \"starttls\"".to_string()
                }
                _ => "the server answered something that is not TLS".to_string(),
            },
            _ => "check tls, smtp_port and ca_file".to_string(),
        }
    }

    fn scrub(&self, text: &str) -> String {
        let text = match &self.password {
            Some(p) => text.replace(p.expose(), REDACTED),
            None => text.to_string(),
        };
        excerpt(&text, DETAIL_MAX)
    }
}

#[async_trait::async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    async fn send(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let message = self.message(n)?;
        let envelope = message.envelope().clone();
        let raw = message.formatted();
        let transport = self.transport();
        let mut guard = DiscardUnlessFinished { channel: self, finished: false };
        let conversation = async {
            let result = match transport.send_raw(&envelope, &raw).await {
                // A pooled connection the server closed while idle fails this way. Retrying may in rare cases
                // duplicate a mail whose final answer was lost; delivery is at-least-once anyway.
                Err(e) if e.is_response() && e.to_string().contains("incomplete response") => {
                    tracing::debug!(channel = %self.name, "SMTP connection dropped; retrying once on a new one");
                    transport.send_raw(&envelope, &raw).await
                }
                other => other,
            };
            guard.finished = true;
            result
        };
        let outcome = tokio::time::timeout(self.timeout, conversation).await;
        drop(guard);
        match outcome {
            Err(_) => Err(DeliveryError::Retryable {
                reason: format!(
                    "{}: no complete SMTP answer within {}",
                    self.endpoint,
                    humantime::format_duration(self.timeout)
                ),
                retry_after: None,
            }),
            Ok(Err(e)) => Err(self.classify(&e)),
            Ok(Ok(response)) => Ok(Delivered {
                status: u16::from(response.code()),
                detail: self.scrub(&response.message().collect::<Vec<_>>().join(" ")),
            }),
        }
    }
}

impl EmailChannel {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<AsyncSmtpTransport<Tokio1Executor>>> {
        // The slot holds no invariant a panic could break, so a poisoned lock is still good.
        self.transport.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pool (a cheap handle to it), built on first use.
    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        self.slot().get_or_insert_with(|| self.builder.clone().build()).clone()
    }
}

/// lettre puts a connection back into its pool when the send using it is dropped, even halfway through a command.
/// The next mail would then read the answers meant for the abandoned one — a rejection could pass for success. So
/// when a send ends without lettre finishing (our timeout, or the caller cancelling), the whole pool is thrown away
/// and the next send connects afresh.
struct DiscardUnlessFinished<'a> {
    channel: &'a EmailChannel,
    finished: bool,
}

impl Drop for DiscardUnlessFinished<'_> {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(channel = %self.channel.name, "SMTP send cut off; discarding the connection pool");
            let discarded = self.channel.slot().take();
            release(discarded);
        }
    }
}

impl fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailChannel")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

impl Drop for EmailChannel {
    fn drop(&mut self) {
        release(self.transport.get_mut().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// Drops a pool handle. Dropping lettre's pool spawns a tokio task, which panics outside a runtime (say, a channel
/// list dropped after `block_on` returned); there the process is ending anyway, so the pool is leaked instead.
fn release(transport: Option<AsyncSmtpTransport<Tokio1Executor>>) {
    if tokio::runtime::Handle::try_current().is_err() {
        std::mem::forget(transport);
    }
}

fn tls_parameters(settings: &EmailSettings) -> Result<TlsParameters, String> {
    let mut params = TlsParameters::builder(settings.smtp_host.clone());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file: cannot read {}: {e}", path.display()))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(format!("ca_file: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()));
        }
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("ca_file: {}: {e}", path.display()))?;
        params = params.add_root_certificate(cert);
    }
    params.build().map_err(|e| format!("tls: cannot set up TLS for {:?}: {e}", settings.smtp_host))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The rustls error behind a failed handshake: lettre reports it as a connection error wrapping an `io::Error`.
fn rustls_error(e: &smtp::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // `io::Error::source` skips the wrapped error itself, so look inside explicitly.
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

/// Keeps the characters a Message-ID's dot-atom allows without quoting.
fn sanitize_id(s: &str) -> String {
    let cleaned: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let cleaned = cleaned.trim_matches('.');
    if cleaned.is_empty() { "x".to_string() } else { cleaned.to_string() }
}

fn firing_count(n: &Notification) -> usize {
    n.alerts.iter().filter(|a| a.event != Event::Resolved).count()
}

/// `[FIRING:2] scanwatch: no_recent_scan on prod-cn-north-4` / `[RESOLVED] …`, naming at most two rules and two
/// targets so it stays readable in an inbox list.
fn subject(n: &Notification, language: Language) -> String {
    let firing = firing_count(n);
    let rules = capped(distinct(n.alerts.iter().map(|a| a.rule.as_str())), language);
    let targets = capped(distinct(n.alerts.iter().map(|a| a.series.target.as_str())), language);
    match (language, firing) {
        (Language::En, 0) => format!("[RESOLVED] scanwatch: {rules} on {targets}"),
        (Language::En, k) => format!("[FIRING:{k}] scanwatch: {rules} on {targets}"),
        (Language::ZhCn, 0) => format!("【恢复】scanwatch：{targets} 的 {rules}"),
        (Language::ZhCn, k) => format!("【告警:{k}】scanwatch：{targets} 的 {rules}"),
    }
}

fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn capped(items: Vec<&str>, language: Language) -> String {
    const SHOWN: usize = 2;
    let head = items.iter().take(SHOWN).copied().collect::<Vec<_>>();
    match (items.len().saturating_sub(SHOWN), language) {
        (0, Language::En) => head.join(", "),
        (0, Language::ZhCn) => head.join("、"),
        (more, Language::En) => format!("{} +{more} more", head.join(", ")),
        (_, Language::ZhCn) => format!("{} 等 {} 项", head.join("、"), items.len()),
    }
}

/// "2 firing, 1 resolved" — the first line of both bodies, so the inbox preview says it all.
fn overview(n: &Notification, language: Language) -> String {
    let firing = firing_count(n);
    let resolved = n.alerts.len() - firing;
    match language {
        Language::En => match (firing, resolved) {
            (f, 0) => format!("scanwatch: {f} alert(s) firing"),
            (0, r) => format!("scanwatch: {r} alert(s) resolved"),
            (f, r) => format!("scanwatch: {f} alert(s) firing, {r} resolved"),
        },
        Language::ZhCn => match (firing, resolved) {
            (f, 0) => format!("scanwatch：{f} 条告警"),
            (0, r) => format!("scanwatch：{r} 条告警已恢复"),
            (f, r) => format!("scanwatch：{f} 条告警，{r} 条已恢复"),
        },
    }
}

/// "FIRING: no_recent_scan (critical)".
fn headline(a: &AlertNotice, language: Language) -> String {
    match language {
        Language::En => {
            let event = match a.event {
                Event::Firing => "FIRING",
                Event::Repeat => "STILL FIRING",
                Event::Resolved => "RESOLVED",
            };
            format!("{event}: {} ({})", a.rule, a.severity)
        }
        Language::ZhCn => {
            let event = match a.event {
                Event::Firing => "告警",
                Event::Repeat => "仍在告警",
                Event::Resolved => "已恢复",
            };
            let severity = match a.severity {
                Severity::Critical => "严重",
                Severity::Warning => "警告",
                Severity::Info => "提示",
            };
            format!("{event}：{}（{severity}）", a.rule)
        }
    }
}

/// The facts of one alert as (label, value) rows, shared by the text and HTML bodies.
fn rows(a: &AlertNotice, language: Language, tz: Tz) -> Vec<(&'static str, String)> {
    let zh = language == Language::ZhCn;
    let label = |en: &'static str, cn: &'static str| if zh { cn } else { en };
    let project = match &a.series.enterprise_project_id {
        Some(eps) if zh => format!("{}（企业项目 {eps}）", a.series.project_id),
        Some(eps) => format!("{} (enterprise project {eps})", a.series.project_id),
        None => a.series.project_id.clone(),
    };
    let task_type = match (a.series.task_type, zh) {
        (TaskType::ClusterScan, true) => "集群扫描".to_string(),
        (TaskType::IacScan, true) => "IaC 扫描".to_string(),
        (t, false) => t.human().to_string(),
    };
    let mut rows = vec![
        (label("What", "问题"), a.summary.clone()),
        (label("Value", "当前值"), a.value.clone()),
        (label("Target", "目标"), a.series.target.clone()),
        (label("Region", "区域"), a.series.region.clone()),
        (label("Project", "项目"), project),
        (label("Task type", "任务类型"), task_type),
        (label("Since", "开始于"), local_time(a.since, tz)),
    ];
    match a.event {
        Event::Firing => {}
        Event::Repeat => rows.push((label("Firing for", "已持续"), human_duration(a.lasted()))),
        Event::Resolved => {
            rows.push((label("Resolved at", "恢复于"), local_time(a.at, tz)));
            rows.push((label("Lasted", "持续"), human_duration(a.lasted())));
        }
    }
    if !a.labels.is_empty() {
        let labels = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
        rows.push((label("Labels", "标签"), labels));
    }
    rows.push((label("Fingerprint", "指纹"), a.fingerprint.clone()));
    rows
}

/// "and 12 more alerts", when some were left out.
fn more(n: &Notification, language: Language) -> Option<String> {
    match (n.alerts.len().checked_sub(MAX_DETAILED)?, language) {
        (0, _) => None,
        (k, Language::En) => Some(format!("… and {k} more alert(s)")),
        (k, Language::ZhCn) => Some(format!("……另有 {k} 条告警")),
    }
}

fn local_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string()
}

fn text_body(n: &Notification, language: Language, tz: Tz) -> String {
    let mut out = overview(n, language);
    out.push('\n');
    for a in n.alerts.iter().take(MAX_DETAILED) {
        out.push('\n');
        out.push_str(&headline(a, language));
        out.push('\n');
        for (label, value) in rows(a, language, tz) {
            out.push_str(&format!("  {label}: {value}\n"));
        }
        for (label, value) in context_rows(a, Format::Plain, language, &|t| local_time(t, tz)) {
            out.push_str(&format!("  {label}: {value}\n"));
        }
    }
    if let Some(more) = more(n, language) {
        out.push_str(&format!("\n{more}\n"));
    }
    out
}

fn html_body(n: &Notification, channel: &str, language: Language, tz: Tz) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family:sans-serif\">\n",
    );
    out.push_str(&format!("<p><b>{}</b></p>\n", escape(&overview(n, language))));
    for a in n.alerts.iter().take(MAX_DETAILED) {
        let colour = match a.event {
            Event::Firing => "#b00020",
            Event::Repeat => "#c25e00",
            Event::Resolved => "#1e7e34",
        };
        out.push_str(&format!("<h3 style=\"color:{colour}\">{}</h3>\n<table>\n", escape(&headline(a, language))));
        for (label, value) in rows(a, language, tz) {
            out.push_str(&format!("<tr><td><b>{}</b></td><td>{}</td></tr>\n", escape(label), escape(&value)));
        }
        out.push_str("</table>\n");
        // HSS's text: already HTML-escaped by `context_rows`, so not escaped again.
        let task = context_rows(a, Format::Html, language, &|t| local_time(t, tz));
        if !task.is_empty() {
            let heading = if language == Language::ZhCn { "扫描任务" } else { "Scan task" };
            out.push_str(&format!("<h4 style=\"margin:8px 0 4px\">{heading}</h4>\n<table>\n"));
            for (label, value) in task {
                out.push_str(&format!("<tr><td><b>{}</b></td><td>{value}</td></tr>\n", escape(label)));
            }
            out.push_str("</table>\n");
        }
    }
    if let Some(more) = more(n, language) {
        out.push_str(&format!("<p>{}</p>\n", escape(&more)));
    }
    let footer = match language {
        Language::En => format!("Sent by scanwatch through channel {channel}."),
        Language::ZhCn => format!("由 scanwatch 通过通道 {channel} 发送。"),
    };
    out.push_str(&format!("<p style=\"color:#777;font-size:small\">{}</p>\n</body></html>\n", escape(&footer)));
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
