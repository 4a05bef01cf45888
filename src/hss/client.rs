//! The HSS client: the accounts it calls for, their credentials, the limits of every call, and the one path every
//! API call takes — pick the credentials (AK/SK signature, static token, or an IAM token with one re-login on a
//! 401), send through [`super::transport`], classify failures with [`super::errors`], and parse the answer.
//!
//! The APIs live in their own modules and add their method to [`HssClient`]: [`super::task_statistics`],
//! [`super::tasks`] (ListTasks) and [`super::task_resources`] (ListTaskResources). Their public items are
//! re-exported here so that `hss::client::…` paths keep working.
//! Secrets never reach logs or errors: bodies are scrubbed of every secret value before they are classified.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::errors::ErrorContext;
use super::iam::{self, TokenCache};
use super::regions;
use super::transport::{self, HssAuth, HssRequest, Transport};
use crate::model::PollError;
use crate::secret::Secret;

pub use super::errors::{ERROR_CODE_BYTES, ERROR_MSG_BYTES, EXCERPT_BYTES, classify_error, classify_error_in};
pub use super::iam::{IamToken, PasswordLogin, ProjectScope};
pub use super::task_statistics::{StatsRequest, StatsResponse, parse_task_stats, stats_url};
pub use super::transport::{MAX_RETRY_AFTER, host_header, parse_retry_after};

/// Limits and identity of every HTTP call to HSS and IAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long to wait for the TCP + TLS connection.
    pub connect_timeout: Duration,
    /// The whole call, body included: a server that trickles bytes still times out.
    pub timeout: Duration,
    /// Bodies larger than this are cut off and reported, never buffered whole.
    pub max_body_bytes: usize,
    /// Sent and signed on every request.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            user_agent: format!("scanwatch/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// How an account proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// AK/SK request signing (`SDK-HMAC-SHA256`); `security_token` for temporary credentials.
    AkSk { ak: String, sk: Secret, security_token: Option<Secret> },
    /// A static `X-Auth-Token`, used as given and never refreshed.
    Token(Secret),
    /// An IAM token obtained with a password, cached in the account and refreshed before it expires.
    Password(PasswordLogin),
}

/// One IAM identity: its credentials and, for password logins, its cached token. Shared (`Arc<Account>`) by every
/// target of the account so they reuse one token.
#[derive(Debug)]
pub struct Account {
    name: String,
    credentials: Credentials,
    tokens: TokenCache,
}

impl Account {
    pub fn new(name: String, credentials: Credentials) -> Self {
        Account { name, credentials, tokens: TokenCache::default() }
    }

    /// The configured account name, for logs and snapshot rows.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Every secret value of the account, so that anything echoed back by a server can be scrubbed.
    pub(super) fn secrets(&self) -> Vec<&str> {
        match &self.credentials {
            Credentials::AkSk { sk, security_token, .. } => {
                let mut s = vec![sk.expose()];
                s.extend(security_token.as_ref().map(Secret::expose));
                s
            }
            Credentials::Token(token) => vec![token.expose()],
            Credentials::Password(login) => vec![login.password.expose()],
        }
    }
}

/// The HTTP client shared by every account and target: one connection pool, fixed limits.
#[derive(Debug, Clone)]
pub struct HssClient {
    transport: Transport,
}

/// A parsed 2xx answer with what identifies it.
#[derive(Debug)]
pub(super) struct Answer<T> {
    pub value: T,
    pub http_status: u16,
    /// `X-Request-Id`, for Huawei support.
    pub request_id: Option<String>,
}

/// Parses a 2xx body into an API's result.
pub(super) type Parser<'p, T> = &'p (dyn Fn(&[u8]) -> Result<T, PollError> + Sync);

impl HssClient {
    /// Builds the shared client: connect and total timeouts, idle connections dropped after a minute (polls are
    /// minutes apart), redirects off (a redirect would carry our token elsewhere), no automatic retries (every
    /// call counts against the 5/min budget).
    pub fn new(opts: ClientOptions) -> Result<HssClient, reqwest::Error> {
        Ok(HssClient { transport: Transport::new(opts)? })
    }

    pub fn options(&self) -> &ClientOptions {
        self.transport.options()
    }

    /// Logs in with a password and returns the token. Failures are `PollError`s whose message says the IAM login
    /// failed: 400/401 from IAM are `auth`, the rest are classified like HSS answers. The password never appears.
    pub async fn iam_login(&self, login: &PasswordLogin, now: DateTime<Utc>) -> Result<IamToken, PollError> {
        iam::login(&self.transport, login, now).await
    }

    /// One HSS API call for `account`: authenticated with its credentials, answered by `parse` on a 2xx.
    ///
    /// `now` is the injected clock: X-Sdk-Date and token expiry use it, never the system clock directly.
    /// With password credentials a 401 from HSS invalidates the cached token, logs in again and retries the call
    /// once, so such a call can reach HSS twice (plus IAM). Every error is scrubbed of every secret in play.
    pub(super) async fn call<T>(
        &self,
        account: &Account,
        req: &HssRequest<'_>,
        now: DateTime<Utc>,
        parse: Parser<'_, T>,
    ) -> Result<Answer<T>, PollError> {
        let secrets = account.secrets();
        let result = match account.credentials() {
            Credentials::AkSk { ak, sk, security_token } => {
                let auth = HssAuth::Signed {
                    ak,
                    sk: sk.expose(),
                    security_token: security_token.as_ref().map(Secret::expose),
                };
                self.call_once(req, &auth, now, &secrets, parse).await
            }
            Credentials::Token(token) => {
                self.call_once(req, &HssAuth::Token(token.expose()), now, &secrets, parse).await
            }
            Credentials::Password(login) => self.call_with_iam_token(account, login, req, now, parse).await,
        };
        result.map_err(|e| transport::scrub_error(e, &secrets))
    }

    async fn call_with_iam_token<T>(
        &self,
        account: &Account,
        login: &PasswordLogin,
        req: &HssRequest<'_>,
        now: DateTime<Utc>,
        parse: Parser<'_, T>,
    ) -> Result<Answer<T>, PollError> {
        let token = account.tokens.token(&self.transport, account.name(), login, now).await?;
        let mut secrets = account.secrets();
        secrets.push(token.value.expose());
        match self.call_once(req, &HssAuth::Token(token.value.expose()), now, &secrets, parse).await {
            Err(e) if e.http_status == Some(401) => {
                tracing::info!(account = account.name(), "HSS rejected the IAM token; logging in again");
                account.tokens.invalidate(&token).await;
                let fresh = account.tokens.token(&self.transport, account.name(), login, now).await?;
                secrets.push(fresh.value.expose());
                self.call_once(req, &HssAuth::Token(fresh.value.expose()), now, &secrets, parse)
                    .await
                    .map_err(|e| transport::scrub_error(e, &secrets))
            }
            other => other.map_err(|e| transport::scrub_error(e, &secrets)),
        }
    }

    async fn call_once<T>(
        &self,
        req: &HssRequest<'_>,
        auth: &HssAuth<'_>,
        now: DateTime<Utc>,
        secrets: &[&str],
        parse: Parser<'_, T>,
    ) -> Result<Answer<T>, PollError> {
        let prepared = transport::prepare(req, auth, &self.options().user_agent, now)?;
        let raw = self.transport.send(prepared, req.api).await?;
        let ctx = ErrorContext {
            project_id: Some(req.project_id),
            region: regions::region_of_hss_endpoint(&req.url),
            endpoint_host: req.url.host_str(),
            task_id: req.task_id,
        };
        if let Some(e) = transport::answer_error(&raw, secrets, now, self.options().max_body_bytes, &ctx) {
            return Err(e);
        }
        let value = parse(&raw.body).map_err(|mut e| {
            e.http_status = Some(raw.status);
            e.request_id.clone_from(&raw.request_id);
            e
        })?;
        Ok(Answer { value, http_status: raw.status, request_id: raw.request_id })
    }
}

#[cfg(test)]
mod tests {
    use url::Url;

    use super::*;
    use crate::hss::test_support::{AK, SK, aksk, t0};

    #[test]
    fn default_options_match_the_documented_limits() {
        let o = ClientOptions::default();
        assert_eq!(
            (o.connect_timeout, o.timeout, o.max_body_bytes),
            (Duration::from_secs(10), Duration::from_secs(30), 1 << 20)
        );
        assert_eq!(o.user_agent, format!("scanwatch/{}", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn accounts_and_calls_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let (client, account) = (HssClient::new(ClientOptions::default()).unwrap(), aksk(SK, None));
        send_sync(&account);
        send_sync(&client);
        let endpoint = Url::parse("http://127.0.0.1:9").unwrap();
        // Compiles only if the call's future can be handed to `tokio::spawn`.
        let req = StatsRequest {
            endpoint: &endpoint,
            project_id: "p",
            enterprise_project_id: None,
            task_type: crate::model::TaskType::ClusterScan,
        };
        send(client.task_statistics(&account, &req, t0()));
    }

    #[test]
    fn debug_output_of_an_account_shows_no_secret() {
        let account = aksk("super-secret-key-value", Some("security-token-value"));
        let shown = format!("{account:?}");
        assert!(!shown.contains("super-secret-key-value") && !shown.contains("security-token-value"), "{shown}");
        assert!(shown.contains(AK));
    }
}
