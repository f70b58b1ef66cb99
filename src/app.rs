//! Daemon wiring (in progress).
pub async fn run(_l: crate::config::Loaded) -> anyhow::Result<()> {
    anyhow::bail!("run is not wired yet")
}
