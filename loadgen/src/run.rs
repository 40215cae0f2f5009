//! Placeholder: `loadgen run` is being written.

/// Arguments of `loadgen run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {}

/// Returns Ok(true) on success, Ok(false) when the run found failures.
pub fn execute(_args: RunArgs) -> anyhow::Result<bool> {
    anyhow::bail!("loadgen run is not written yet")
}
