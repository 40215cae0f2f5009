//! Placeholder: `loadgen check` is being written.

/// Arguments of `loadgen check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {}

/// Returns Ok(true) on success, Ok(false) when the run found failures.
pub fn execute(_args: CheckArgs) -> anyhow::Result<bool> {
    anyhow::bail!("loadgen check is not written yet")
}
