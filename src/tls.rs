//! The process's TLS crypto: rustls with ring for every HTTPS client (reqwest) and SMTP connection (lettre).
//!
//! reqwest is built with `rustls-no-provider`, so it takes the process-wide rustls provider and panics when a
//! client is built before one is installed; [`client_builder`] installs ring first, and every client in scanwatch
//! is built through it. ring instead of reqwest's default aws-lc-rs: the same TLS 1.2/1.3 suites for what
//! scanwatch connects to, several MB less code mapped into the daemon (BENCHMARKS.md, idle RSS).

/// Installs ring as the process's rustls crypto provider; a provider installed earlier (by anyone) is kept.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `reqwest::Client::builder()` with the crypto provider installed: building the client cannot panic for want of one.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A client with reqwest's defaults (tests, examples, one-off requests).
pub fn client() -> reqwest::Client {
    // The defaults cannot fail to build: no custom roots, identity or resolver.
    client_builder().build().unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn the_installed_provider_is_ring() {
        install_crypto_provider();
        let installed = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let ring = rustls::crypto::ring::default_provider();
        let suites = |p: &rustls::crypto::CryptoProvider| p.cipher_suites.iter().map(|s| s.suite()).collect::<Vec<_>>();
        assert_eq!(suites(installed), suites(&ring));
    }

    /// An HTTPS server on 127.0.0.1 with a self-signed certificate for `localhost` (TLS by rustls with ring), answering
    /// every request with `200 ok`. Returns its port and its certificate.
    async fn https_server(versions: &[&'static rustls::SupportedProtocolVersion]) -> (u16, reqwest::Certificate) {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = key.cert.der().clone();
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], private)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, reqwest::Certificate::from_der(der.as_ref()).unwrap())
    }

    /// What every scanwatch client is built from speaks HTTPS with ring, over TLS 1.3 and 1.2 (HSS gateways and
    /// chat webhooks may offer either), to a server whose certificate it trusts.
    #[tokio::test]
    async fn a_client_from_client_builder_speaks_tls_1_2_and_1_3_with_ring() {
        for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
            let (port, cert) = https_server(versions).await;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let client = client_builder().add_root_certificate(cert).resolve("localhost", addr).build().unwrap();
            let response = client.get(format!("https://localhost:{port}/")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "ok");
        }
    }

    /// The certificate is checked: the same server, not trusted, is refused before any request is sent.
    #[tokio::test]
    async fn a_certificate_nobody_trusts_is_refused() {
        let (port, _) = https_server(&[&rustls::version::TLS13]).await;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let client = client_builder().resolve("localhost", addr).build().unwrap();
        let err = client.get(format!("https://localhost:{port}/")).send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    }
}
