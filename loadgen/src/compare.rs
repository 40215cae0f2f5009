//! Placeholder: `loadgen compare` is being written.

/// Arguments of `loadgen compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {}

/// Returns Ok(true) on success, Ok(false) when the run found failures.
pub fn execute(_args: CompareArgs) -> anyhow::Result<bool> {
    anyhow::bail!("loadgen compare is not written yet")
}
