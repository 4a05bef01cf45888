//! The email channel against a real, independent SMTP server (`mailin-embedded`) over TCP on 127.0.0.1: plain,
//! STARTTLS with AUTH, and implicit TLS (a rustls terminator in front of it); the received bytes are parsed with
//! `mail-parser`. Plus scripted servers for the failure modes mailin cannot produce, and the pure rendering.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig, response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::*;
use crate::model::SeriesKey;
use crate::rules::RuleName;

const USER: &str = "scanwatch@example.com";
const PASSWORD: &str = "s3cret-Pa55word";
const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;

// ---------------------------------------------------------------------------------------------------------------
// Fixtures

fn series(target: &str, task_type: TaskType) -> SeriesKey {
    SeriesKey {
        target: target.to_string(),
        account: "prod".to_string(),
        region: "cn-north-4".to_string(),
        project_id: "0123456789abcdef0123456789abcdef".to_string(),
        enterprise_project_id: Some("all_granted_eps".to_string()),
        task_type,
    }
}

fn notice(event: Event, rule: RuleName, target: &str) -> AlertNotice {
    let since = Utc.with_ymd_and_hms(2025, 4, 22, 8, 4, 11).single().unwrap();
    AlertNotice {
        fingerprint: "3f2a9c1d5e6b7a80".to_string(),
        rule,
        severity: Severity::Critical,
        event,
        series: series(target, TaskType::ClusterScan),
        labels: BTreeMap::from([("env".to_string(), "prod".to_string()), ("team".to_string(), "secops".to_string())]),
        summary: "no cluster scan has started for 31h; limit 24h".to_string(),
        value: "31h".to_string(),
        since,
        at: since + chrono::TimeDelta::hours(7) + chrono::TimeDelta::minutes(30),
        context: None,
    }
}

fn notification(id: &str, alerts: Vec<AlertNotice>) -> Notification {
    Notification {
        id: id.to_string(),
        channel: "oncall-mail".to_string(),
        created_at: Utc.with_ymd_and_hms(2025, 4, 22, 15, 34, 11).single().unwrap(),
        alerts,
        group_labels: Default::default(),
    }
}

fn firing_pair() -> Notification {
    let mut iac = notice(Event::Firing, RuleName::NoRecentScan, "prod-cn-north-4");
    iac.series.task_type = TaskType::IacScan;
    notification("n-1", vec![notice(Event::Firing, RuleName::NoRecentScan, "prod-cn-north-4"), iac])
}

fn settings(port: u16, tls: EmailTls) -> EmailSettings {
    EmailSettings {
        smtp_host: "127.0.0.1".to_string(),
        smtp_port: port,
        tls,
        username: None,
        password: None,
        from: "scanwatch <scanwatch@example.com>".to_string(),
        to: vec!["secops@example.com".to_string(), "Oncall <oncall@example.com>".to_string()],
        ca_file: None,
        timeout: Duration::from_secs(20),
    }
}

fn with_auth(mut s: EmailSettings, password: &str) -> EmailSettings {
    s.username = Some(USER.to_string());
    s.password = Some(Secret::new(password));
    s
}

fn channel(s: EmailSettings) -> EmailChannel {
    EmailChannel::new("oncall-mail".to_string(), s, Language::En, SHANGHAI).unwrap()
}

fn reason(e: &DeliveryError) -> &str {
    match e {
        DeliveryError::Retryable { reason, .. } | DeliveryError::Permanent { reason } => reason,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A private CA and a server certificate for 127.0.0.1 / localhost, made per test.

struct Pki {
    dir: tempfile::TempDir,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        Pki::for_names(&["localhost", "127.0.0.1"])
    }

    fn for_names(names: &[&str]) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.distinguished_name.push(DnType::CommonName, "scanwatch test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).unwrap();
        Pki { leaf_der: leaf.der().to_vec(), leaf_key_der: leaf_key.serialize_der(), dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_file(&self) -> Option<PathBuf> {
        Some(self.path("ca.pem"))
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(self.leaf_der.clone())], key)
            .unwrap();
        Arc::new(config)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The independent SMTP server: mailin-embedded on a thread, recording what it accepted.

#[derive(Debug, Clone)]
struct Received {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

#[derive(Default)]
struct Log {
    mails: Vec<Received>,
    logins: Vec<String>,
}

#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Log>>,
    /// Per connection: the mail being received.
    current: Option<Received>,
}

impl Recorder {
    fn mails(&self) -> Vec<Received> {
        self.log.lock().unwrap().mails.clone()
    }

    fn logins(&self) -> Vec<String> {
        self.log.lock().unwrap().logins.clone()
    }

    fn login(&mut self, user: &str, password: &str) -> Response {
        if user == USER && password == PASSWORD {
            self.log.lock().unwrap().logins.push(user.to_string());
            response::AUTH_OK
        } else {
            Response::custom(535, "5.7.8 Authentication credentials invalid".to_string())
        }
    }
}

impl Handler for Recorder {
    fn rcpt(&mut self, to: &str) -> Response {
        match to {
            "nobody@example.com" => Response::custom(550, "5.1.1 <nobody@example.com>: user unknown".to_string()),
            "busy@example.com" => Response::custom(451, "4.3.2 try again later".to_string()),
            _ => response::OK,
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(Received { from: from.to_string(), to: to.to_vec(), data: Vec::new() });
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(mail) = &mut self.current {
            mail.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(mail) = self.current.take() {
            self.log.lock().unwrap().mails.push(mail);
        }
        response::OK
    }

    fn auth_plain(&mut self, _authorization_id: &str, authentication_id: &str, password: &str) -> Response {
        self.login(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.login(username, password)
    }
}

/// Starts mailin on an already bound 127.0.0.1 port (so connecting never races the thread), offering STARTTLS when
/// given a certificate and AUTH PLAIN/LOGIN (after STARTTLS only, as mailin insists) when asked.
fn start_mailin(recorder: &Recorder, starttls: Option<&Pki>, auth: bool) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = Server::new(recorder.clone());
    server.with_name("mx.test").with_num_threads(4).with_tcp_listener(listener);
    if let Some(pki) = starttls {
        server
            .with_ssl(SslConfig::SelfSigned {
                cert_path: pki.path("server.pem").display().to_string(),
                key_path: pki.path("server.key").display().to_string(),
            })
            .unwrap();
    }
    if auth {
        server.with_auth(AuthMechanism::Plain).with_auth(AuthMechanism::Login);
    }
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    port
}

/// Implicit TLS for a plain SMTP server: terminates TLS with rustls and pipes the conversation to `upstream`.
async fn start_tls_wrapper(pki: &Pki, upstream: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

fn parse(mail: &Received) -> mail_parser::Message<'_> {
    MessageParser::default().parse(&mail.data).expect("the received mail parses")
}

// ---------------------------------------------------------------------------------------------------------------
// Real SMTP conversations

#[tokio::test]
async fn plain_smtp_delivers_one_multipart_mail_with_threading_and_automation_headers() {
    let server = Recorder::default();
    let port = start_mailin(&server, None, false);
    let ch = channel(settings(port, EmailTls::None));

    let delivered = ch.send(&firing_pair()).await.unwrap();

    assert_eq!(delivered.status, 250);
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].from, "scanwatch@example.com");
    assert_eq!(mails[0].to, ["secops@example.com", "oncall@example.com"]);
    let m = parse(&mails[0]);
    assert_eq!(m.subject(), Some("[FIRING:2] scanwatch: no_recent_scan on prod-cn-north-4"));
    let from = m.from().and_then(|a| a.first()).unwrap();
    assert_eq!((from.name(), from.address()), (Some("scanwatch"), Some("scanwatch@example.com")));
    let to: Vec<_> = m.to().unwrap().iter().filter_map(|a| a.address()).collect();
    assert_eq!(to, ["secops@example.com", "oncall@example.com"]);
    let id = m.message_id().unwrap();
    assert_eq!(id, "n-1@scanwatch.example.com");
    assert_eq!(m.in_reply_to().as_text(), Some("alert-3f2a9c1d5e6b7a80@scanwatch.example.com"));
    assert_eq!(m.references().as_text(), Some("alert-3f2a9c1d5e6b7a80@scanwatch.example.com"));
    assert_eq!(m.header("Auto-Submitted").and_then(|h| h.as_text()), Some("auto-generated"));
    assert_eq!(m.header("X-Auto-Response-Suppress").and_then(|h| h.as_text()), Some("All"));
    assert_eq!(m.date().unwrap().to_timestamp(), firing_pair().created_at.timestamp());

    let root = m.content_type().unwrap();
    assert_eq!((root.ctype(), root.subtype()), ("multipart", Some("alternative")));
    let kinds: Vec<_> = m.parts[1..]
        .iter()
        .map(|p| {
            let ct = p.content_type().unwrap();
            format!("{}/{}; charset={}", ct.ctype(), ct.subtype().unwrap(), ct.attribute("charset").unwrap())
        })
        .collect();
    assert_eq!(kinds, ["text/plain; charset=utf-8", "text/html; charset=utf-8"], "plain first, HTML last");
    let text = m.body_text(0).unwrap();
    assert!(text.starts_with("scanwatch: 2 alert(s) firing"), "{text}");
    for expected in [
        "FIRING: no_recent_scan (critical)",
        "What: no cluster scan has started for 31h; limit 24h",
        "Value: 31h",
        "Target: prod-cn-north-4",
        "Region: cn-north-4",
        "Project: 0123456789abcdef0123456789abcdef (enterprise project all_granted_eps)",
        "Task type: cluster scan",
        "Task type: IaC scan",
        "Since: 2025-04-22 16:04:11 CST",
        "Labels: env=prod, team=secops",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let html = m.body_html(0).unwrap();
    assert!(html.contains("<td><b>Target</b></td><td>prod-cn-north-4</td>"), "{html}");
}

#[tokio::test]
async fn starttls_with_auth_delivers_after_the_server_checked_the_credentials() {
    let pki = Pki::new();
    let server = Recorder::default();
    let port = start_mailin(&server, Some(&pki), true);
    let mut s = with_auth(settings(port, EmailTls::Starttls), PASSWORD);
    s.ca_file = pki.ca_file();
    let ch = channel(s);

    let delivered = ch.send(&firing_pair()).await.unwrap();

    assert_eq!(delivered.status, 250);
    // mailin offers AUTH only once the connection is encrypted, so a login proves STARTTLS happened.
    assert_eq!(server.logins(), [USER]);
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    let m = parse(&mails[0]);
    assert_eq!(m.subject(), Some("[FIRING:2] scanwatch: no_recent_scan on prod-cn-north-4"));
    assert_eq!(m.text_body_count(), 1);
    assert_eq!(m.html_body_count(), 1);
}

#[tokio::test]
async fn implicit_tls_delivers_through_a_tls_wrapped_smtp_server() {
    let pki = Pki::new();
    let server = Recorder::default();
    let plain = start_mailin(&server, None, false);
    let port = start_tls_wrapper(&pki, plain).await;
    let mut s = settings(port, EmailTls::Implicit);
    s.ca_file = pki.ca_file();

    let delivered = channel(s).send(&firing_pair()).await.unwrap();

    assert_eq!(delivered.status, 250);
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(parse(&mails[0]).header("Auto-Submitted").and_then(|h| h.as_text()), Some("auto-generated"));
}

#[tokio::test]
async fn two_notifications_for_one_alert_share_the_thread_root_but_not_the_message_id() {
    let server = Recorder::default();
    let port = start_mailin(&server, None, false);
    let ch = channel(settings(port, EmailTls::None));
    let firing = notification("n-1", vec![notice(Event::Firing, RuleName::NoRecentScan, "prod-cn-north-4")]);
    let resolved = notification("n-2", vec![notice(Event::Resolved, RuleName::NoRecentScan, "prod-cn-north-4")]);

    ch.send(&firing).await.unwrap();
    ch.send(&resolved).await.unwrap();

    let mails = server.mails();
    assert_eq!(mails.len(), 2);
    let (a, b) = (parse(&mails[0]), parse(&mails[1]));
    assert_ne!(a.message_id(), b.message_id());
    assert_eq!(a.references().as_text(), b.references().as_text());
    assert_eq!(a.in_reply_to().as_text(), b.in_reply_to().as_text());
    assert_eq!(b.subject(), Some("[RESOLVED] scanwatch: no_recent_scan on prod-cn-north-4"));
    let text = b.body_text(0).unwrap();
    assert!(text.contains("Resolved at: 2025-04-22 23:34:11 CST"), "{text}");
    assert!(text.contains("Lasted: 7h30m"), "{text}");
}

#[tokio::test]
async fn a_retried_notification_keeps_its_message_id_so_mail_clients_drop_the_duplicate() {
    let server = Recorder::default();
    let port = start_mailin(&server, None, false);
    let ch = channel(settings(port, EmailTls::None));
    let n = firing_pair();
    let other = notification("n-2", n.alerts.clone());

    // The same notification twice (a retry after a lost answer, or after a crash), then another one.
    ch.send(&n).await.unwrap();
    ch.send(&n).await.unwrap();
    channel(settings(port, EmailTls::None)).send(&n).await.unwrap();
    ch.send(&other).await.unwrap();

    let mails = server.mails();
    let ids: Vec<String> = mails.iter().map(|m| parse(m).message_id().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], "n-1@scanwatch.example.com", "derived from the notification's uid");
    assert_eq!(ids[1], ids[0], "a retry carries the same Message-ID");
    assert_eq!(ids[2], ids[0], "so does a retry from a restarted process (a new channel)");
    assert_ne!(ids[3], ids[0], "another notification has its own");
    let roots: Vec<Option<String>> =
        mails.iter().map(|m| parse(m).references().as_text().map(str::to_string)).collect();
    assert!(roots.iter().all(|r| r.as_deref() == Some("alert-3f2a9c1d5e6b7a80@scanwatch.example.com")), "{roots:?}");
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_the_error_never_shows_it() {
    let pki = Pki::new();
    let server = Recorder::default();
    let port = start_mailin(&server, Some(&pki), true);
    let wrong = "Wr0ng-but-secret";
    let mut s = with_auth(settings(port, EmailTls::Starttls), wrong);
    s.ca_file = pki.ca_file();

    let err = channel(s).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("535") && text.contains("Authentication credentials invalid"), "{text}");
    assert!(text.contains("check username and password"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    assert!(server.mails().is_empty());
}

#[tokio::test]
async fn a_closed_port_is_retryable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };

    let err = channel(settings(port, EmailTls::None)).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
    assert!(reason(&err).starts_with(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn starttls_required_but_not_offered_is_permanent_with_a_hint() {
    let pki = Pki::new();
    let server = Recorder::default();
    let port = start_mailin(&server, None, false);
    let mut s = with_auth(settings(port, EmailTls::Starttls), PASSWORD);
    s.ca_file = pki.ca_file();

    let err = channel(s).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    assert!(reason(&err).contains("does not offer STARTTLS, which tls = \"starttls\" requires"), "{err}");
    assert!(server.mails().is_empty(), "nothing may go out in clear text");
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_permanent_with_a_ca_file_hint() {
    let pki = Pki::new();
    let server = Recorder::default();
    let port = start_mailin(&server, Some(&pki), true);
    let s = with_auth(settings(port, EmailTls::Starttls), PASSWORD);

    let err = channel(s).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    assert!(reason(&err).contains("not trusted: put its CA in ca_file"), "{err}");
    assert!(server.logins().is_empty(), "the password must not reach an unverified server");
}

#[tokio::test]
async fn a_certificate_for_another_host_is_permanent_with_a_name_hint() {
    let pki = Pki::for_names(&["mail.example.com"]);
    let server = Recorder::default();
    let port = start_mailin(&server, Some(&pki), true);
    let mut s = with_auth(settings(port, EmailTls::Starttls), PASSWORD);
    s.ca_file = pki.ca_file();

    let err = channel(s).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    assert!(reason(&err).contains("not issued for smtp_host \"127.0.0.1\""), "{err}");
    assert!(server.logins().is_empty(), "the password must not reach an unverified server");
}

#[tokio::test]
async fn implicit_tls_against_a_plain_smtp_server_is_permanent_with_a_port_hint() {
    let pki = Pki::new();
    let server = Recorder::default();
    let port = start_mailin(&server, None, false);
    let mut s = settings(port, EmailTls::Implicit);
    s.ca_file = pki.ca_file();

    let err = channel(s).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    assert!(reason(&err).contains("does not speak TLS on this port"), "{err}");
}

#[tokio::test]
async fn a_rejected_recipient_is_permanent_with_the_servers_text() {
    let server = Recorder::default();
    let port = start_mailin(&server, None, false);
    let mut s = settings(port, EmailTls::None);
    s.to = vec!["nobody@example.com".to_string()];

    let err = channel(s).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    assert!(reason(&err).contains("550") && reason(&err).contains("user unknown"), "{err}");
}

#[tokio::test]
async fn a_temporary_smtp_failure_is_retryable() {
    let server = Recorder::default();
    let port = start_mailin(&server, None, false);
    let mut s = settings(port, EmailTls::None);
    s.to = vec!["busy@example.com".to_string()];

    let err = channel(s).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
    assert!(reason(&err).contains("451") && reason(&err).contains("try again later"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// Scripted servers: what a real server does rarely, on demand

#[tokio::test]
async fn a_server_that_never_answers_is_retryable_after_the_timeout() {
    // The kernel completes the TCP handshake from the backlog; nobody ever sends the greeting.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = settings(port, EmailTls::None);
    s.timeout = Duration::from_millis(300);

    let err = channel(s).send(&firing_pair()).await.unwrap_err();

    assert!(matches!(err, DeliveryError::Retryable { .. }), "{err:?}");
    assert!(reason(&err).contains("no complete SMTP answer within 300ms"), "{err}");
    drop(listener);
}

/// Speaks just enough SMTP, except that on the first connection it reads MAIL and hangs up without answering: what
/// a client sees when the server dropped a pooled connection it considered idle for too long.
async fn start_server_that_drops_the_first_connection() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    tokio::spawn(async move {
        let mut connection = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            connection += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 scripted ESMTP\r\n").await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-scripted\r\n250 8BITMIME\r\n",
                        "MAIL" if connection == 1 => {
                            log.lock().unwrap().push(format!("connection {connection}: hung up"));
                            return;
                        }
                        "DATA" => {
                            let _ = write.write_all(b"354 go ahead\r\n").await;
                            while let Ok(Some(data)) = lines.next_line().await {
                                if data == "." {
                                    break;
                                }
                            }
                            log.lock().unwrap().push(format!("connection {connection}: queued"));
                            b"250 queued\r\n"
                        }
                        "QUIT" => b"221 bye\r\n",
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(answer).await;
                }
            });
        }
    });
    (port, events)
}

#[tokio::test]
async fn a_connection_the_server_drops_mid_conversation_is_retried_once_on_a_new_one() {
    let (port, events) = start_server_that_drops_the_first_connection().await;
    let ch = channel(settings(port, EmailTls::None));

    let delivered = ch.send(&firing_pair()).await;

    assert!(delivered.is_ok(), "{delivered:?}");
    assert_eq!(*events.lock().unwrap(), ["connection 1: hung up", "connection 2: queued"]);
}

/// Speaks just enough SMTP, except that on the first connection it answers the end of the first mail only when the
/// client says something next: a server slower than our timeout.
async fn start_server_slow_to_queue_the_first_mail() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    tokio::spawn(async move {
        let mut connection = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            connection += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut late_answer = None;
                let _ = write.write_all(b"220 scripted ESMTP\r\n").await;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(late) = late_answer.take() {
                        let _ = write.write_all(late).await;
                    }
                    let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-scripted\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            let _ = write.write_all(b"354 go ahead\r\n").await;
                            while let Ok(Some(data)) = lines.next_line().await {
                                if data == "." {
                                    break;
                                }
                            }
                            log.lock().unwrap().push(format!("connection {connection}: queued"));
                            if connection == 1 {
                                late_answer = Some(b"250 queued late\r\n".as_slice());
                                continue;
                            }
                            b"250 queued\r\n"
                        }
                        "QUIT" => b"221 bye\r\n",
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(answer).await;
                }
            });
        }
    });
    (port, events)
}

#[tokio::test]
async fn a_send_cut_off_by_the_timeout_leaves_no_half_used_connection_for_the_next_mail() {
    let (port, events) = start_server_slow_to_queue_the_first_mail().await;
    let mut s = settings(port, EmailTls::None);
    // Long enough for the whole conversation up to the final dot even on a loaded machine.
    s.timeout = Duration::from_secs(1);
    let ch = channel(s);

    let first = ch.send(&firing_pair()).await;
    // Let lettre's spawned task put the abandoned connection back into the pool it came from.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let second = ch.send(&firing_pair()).await;

    assert!(matches!(first, Err(DeliveryError::Retryable { .. })), "{first:?}");
    assert_eq!(second.map(|d| d.detail), Ok("queued".to_string()));
    assert_eq!(*events.lock().unwrap(), ["connection 1: queued", "connection 2: queued"]);
}

#[test]
fn dropping_a_used_channel_after_its_runtime_is_gone_does_not_panic() {
    let server = Recorder::default();
    let port = start_mailin(&server, None, false);
    let ch = channel(settings(port, EmailTls::None));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(ch.send(&firing_pair())).unwrap();
    drop(rt);

    drop(ch);

    assert_eq!(server.mails().len(), 1);
}

#[tokio::test]
async fn a_notification_without_alerts_is_permanent() {
    let ch = channel(settings(25, EmailTls::None));

    let err = ch.send(&notification("n-0", Vec::new())).await.unwrap_err();

    assert_eq!(err, DeliveryError::Permanent { reason: "the notification lists no alert".to_string() });
}

// ---------------------------------------------------------------------------------------------------------------
// Settings

type Change = Box<dyn Fn(&mut EmailSettings)>;

#[test]
fn new_rejects_settings_that_cannot_work_and_names_the_setting() {
    let pki = Pki::new();
    std::fs::write(pki.path("empty.pem"), "not a certificate").unwrap();
    let cases: Vec<(&str, Change)> = vec![
        ("from:", Box::new(|s| s.from = "scanwatch at example".to_string())),
        ("to:", Box::new(|s| s.to.clear())),
        ("to[1]:", Box::new(|s| s.to[1] = "oncall@".to_string())),
        ("tls: \"none\"", Box::new(|s| s.smtp_host = "smtp.example.com".to_string())),
        ("password:", Box::new(|s| s.username = Some(USER.to_string()))),
        ("username:", Box::new(|s| s.password = Some(Secret::new(PASSWORD)))),
        ("ca_file: cannot read", {
            let missing = pki.path("missing.pem");
            Box::new(move |s| {
                s.tls = EmailTls::Implicit;
                s.ca_file = Some(missing.clone());
            })
        }),
        ("ca_file:", {
            let empty = pki.path("empty.pem");
            Box::new(move |s| {
                s.tls = EmailTls::Starttls;
                s.ca_file = Some(empty.clone());
            })
        }),
    ];
    for (expected, change) in cases {
        let mut s = settings(25, EmailTls::None);
        change(&mut s);
        let err = EmailChannel::new("m".to_string(), s, Language::En, SHANGHAI).unwrap_err();
        assert!(err.starts_with(expected), "{expected}: {err}");
    }
}

#[test]
fn plain_text_is_allowed_to_every_loopback_spelling() {
    for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1"] {
        let mut s = settings(25, EmailTls::None);
        s.smtp_host = host.to_string();
        assert!(EmailChannel::new("m".to_string(), s, Language::En, SHANGHAI).is_ok(), "{host}");
    }
}

#[test]
fn debug_output_never_shows_the_password() {
    let ch = channel(with_auth(settings(25, EmailTls::None), PASSWORD));

    let shown = format!("{ch:?}");

    assert!(shown.contains("127.0.0.1:25") && !shown.contains(PASSWORD), "{shown}");
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

#[test]
fn the_subject_counts_firing_alerts_and_names_each_rule_and_target_once() {
    let mixed = notification(
        "n",
        vec![
            notice(Event::Firing, RuleName::NoRecentScan, "prod-a"),
            notice(Event::Repeat, RuleName::StuckRunning, "prod-a"),
            notice(Event::Resolved, RuleName::NoRecentScan, "prod-b"),
        ],
    );
    assert_eq!(subject(&mixed, Language::En), "[FIRING:2] scanwatch: no_recent_scan, stuck_running on prod-a, prod-b");
    assert_eq!(subject(&mixed, Language::ZhCn), "【告警:2】scanwatch：prod-a、prod-b 的 no_recent_scan、stuck_running");

    let resolved = notification("n", vec![notice(Event::Resolved, RuleName::PollFailing, "prod-a")]);
    assert_eq!(subject(&resolved, Language::En), "[RESOLVED] scanwatch: poll_failing on prod-a");
    assert_eq!(subject(&resolved, Language::ZhCn), "【恢复】scanwatch：prod-a 的 poll_failing");
}

#[test]
fn the_subject_names_at_most_two_rules_and_two_targets() {
    let many = notification(
        "n",
        ["t1", "t2", "t3", "t4"].iter().map(|t| notice(Event::Firing, RuleName::TotalStalled, t)).collect(),
    );

    assert_eq!(subject(&many, Language::En), "[FIRING:4] scanwatch: total_stalled on t1, t2 +2 more");
    assert_eq!(subject(&many, Language::ZhCn), "【告警:4】scanwatch：t1、t2 等 4 项 的 total_stalled");
}

#[test]
fn a_reminder_says_how_long_the_alert_has_been_firing() {
    let n = notification("n", vec![notice(Event::Repeat, RuleName::NoRecentScan, "prod-a")]);

    let text = text_body(&n, Language::En, SHANGHAI);

    assert!(text.contains("STILL FIRING: no_recent_scan (critical)"), "{text}");
    assert!(text.contains("Firing for: 7h30m"), "{text}");
    assert!(!text.contains("Resolved at"), "{text}");
}

#[test]
fn a_mass_outage_lists_fifty_alerts_and_counts_the_rest() {
    let n = notification(
        "n",
        (0..62).map(|i| notice(Event::Firing, RuleName::PollFailing, &format!("target-{i}"))).collect(),
    );

    let text = text_body(&n, Language::En, SHANGHAI);
    let html = html_body(&n, "m", Language::En, SHANGHAI);

    assert_eq!(text.matches("FIRING: poll_failing").count(), 50);
    assert!(text.contains("target-49") && !text.contains("target-50"), "{text}");
    assert!(text.ends_with("\n… and 12 more alert(s)\n"), "{text}");
    assert_eq!(html.matches("<table>").count(), 50);
    assert!(html.contains("<p>… and 12 more alert(s)</p>"), "{html}");
    assert_eq!(subject(&n, Language::En), "[FIRING:62] scanwatch: poll_failing on target-0, target-1 +60 more");
}

#[test]
fn the_html_body_escapes_everything_it_shows() {
    let mut a = notice(Event::Firing, RuleName::NoRecentScan, "prod<&>\"'");
    a.summary = "<script>alert(1)</script>".to_string();
    let n = notification("n", vec![a]);

    let html = html_body(&n, "mail<b>", Language::En, SHANGHAI);

    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(html.contains("prod&lt;&amp;&gt;&quot;&#39;"), "{html}");
    assert!(html.contains("channel mail&lt;b&gt;."), "{html}");
    assert!(!html.contains("<script>"), "{html}");
}

#[test]
fn zh_cn_bodies_are_in_chinese_with_local_times() {
    let n = notification("n", vec![notice(Event::Resolved, RuleName::NoRecentScan, "prod-a")]);

    let text = text_body(&n, Language::ZhCn, SHANGHAI);

    for expected in [
        "scanwatch：1 条告警已恢复",
        "已恢复：no_recent_scan（严重）",
        "任务类型: 集群扫描",
        "项目: 0123456789abcdef0123456789abcdef（企业项目 all_granted_eps）",
        "开始于: 2025-04-22 16:04:11 CST",
        "持续: 7h30m",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn a_chinese_mail_round_trips_through_its_mime_encoding() {
    let ch = EmailChannel::new("m".to_string(), settings(25, EmailTls::None), Language::ZhCn, SHANGHAI).unwrap();
    let n = firing_pair();

    let raw = ch.message(&n).unwrap().formatted();
    let m = MessageParser::default().parse(&raw).unwrap();

    assert!(raw.is_ascii(), "headers and bodies are transfer-encoded");
    assert_eq!(m.subject(), Some("【告警:2】scanwatch：prod-cn-north-4 的 no_recent_scan"));
    assert!(m.body_text(0).unwrap().contains("任务类型: IaC 扫描"));
    assert!(m.body_html(0).unwrap().contains("<td>集群扫描</td>"));
}

#[test]
fn message_ids_keep_only_safe_characters() {
    let ch = channel(settings(25, EmailTls::None));
    let mut n = notification("id with spaces@and<brackets>", vec![notice(Event::Firing, RuleName::NoRecentScan, "a")]);
    n.alerts[0].fingerprint = "fp/..".to_string();

    let m = ch.message(&n).unwrap();
    let raw = String::from_utf8(m.formatted()).unwrap();

    assert!(raw.contains("Message-ID: <id-with-spaces-and-brackets-@scanwatch.example.com>"), "{raw}");
    assert!(raw.contains("References: <alert-fp-@scanwatch.example.com>"), "{raw}");
}

#[test]
fn an_expired_certificate_gets_its_own_hint() {
    let ch = channel(settings(465, EmailTls::None));

    let hint = ch.tls_hint(&rustls::Error::InvalidCertificate(rustls::CertificateError::Expired));

    assert_eq!(hint, "the server's certificate has expired");
}

#[test]
fn loopback_detection_rejects_look_alikes() {
    assert!(is_loopback("LOCALHOST"));
    assert!(!is_loopback("localhost.example.com"));
    assert!(!is_loopback("10.0.0.1"));
    assert!(!is_loopback("[2001:db8::1]"));
}

// ---------------------------------------------------------------------------------------------------------------
// Task context

fn with_task_context(context: crate::model::AlertContext) -> Notification {
    let mut a = notice(Event::Firing, RuleName::NoRecentScan, "prod-cn-north-4");
    a.context = Some(context);
    notification("ctx-1", vec![a])
}

#[test]
fn a_hostile_task_context_is_plain_in_the_text_part_and_escaped_in_the_html_part() {
    use crate::notify::channels::testkit::{assert_hostile_context_is_inert, hostile_context};
    let n = with_task_context(hostile_context());
    for language in [Language::En, Language::ZhCn] {
        let text = text_body(&n, language, SHANGHAI);
        assert_hostile_context_is_inert(&text, language, &[]);
        assert!(text.contains("  Task: ") || text.contains("  任务: "), "{text}");
        let html = html_body(&n, "oncall-mail", language, SHANGHAI);
        assert_hostile_context_is_inert(&html, language, &[]);
        for raw in ["<script>", "<b>x", "<at id=all>", "<!here>"] {
            assert!(!html.contains(raw), "{raw} in\n{html}");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains(if language == Language::En { "<h4" } else { "扫描任务" }), "{html}");
    }
    // Times in the context use the mail's zone and format, like the rest of the mail.
    assert!(text_body(&n, Language::En, SHANGHAI).contains("Task started: 2025-04-22 15:04:11 CST"));
}

#[test]
fn both_parts_say_why_there_is_no_task_context() {
    use crate::notify::channels::testkit::{assert_says_context_unavailable, unavailable_context};
    let n = with_task_context(unavailable_context());
    for language in [Language::En, Language::ZhCn] {
        assert_says_context_unavailable(&text_body(&n, language, SHANGHAI), language);
        assert_says_context_unavailable(&html_body(&n, "oncall-mail", language, SHANGHAI), language);
    }
}
