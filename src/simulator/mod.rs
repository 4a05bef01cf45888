//! Placeholder until the sim branch lands.
pub async fn run(
    _: std::net::SocketAddr,
    _: &std::path::Path,
    _: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
