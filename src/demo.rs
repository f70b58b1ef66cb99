//! Demo (in progress).
pub async fn run(_s: u64) -> anyhow::Result<()> {
    anyhow::bail!("demo is not wired yet")
}
