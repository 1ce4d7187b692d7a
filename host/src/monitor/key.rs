//! Loading the cluster key: `--key-file PATH` or the `AMVM_CLUSTER_KEY` environment variable.

use std::path::Path;

use super::proto::ClusterKey;

/// Environment variable holding the cluster key.
pub const KEY_ENV: &str = "AMVM_CLUSTER_KEY";

/// Errors loading the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {0}")]
    Read(std::path::PathBuf, #[source] std::io::Error),
    #[error("no cluster key: pass --key-file or set {KEY_ENV}")]
    Missing,
    #[error("cluster key rejected")]
    Invalid(#[source] super::proto::ProtoError),
}

/// Loads the key from the file if given, else from the environment. Surrounding whitespace of
/// the key text is ignored, so `openssl rand -hex 32 > key` works.
pub fn load(file: Option<&Path>) -> Result<ClusterKey, KeyError> {
    let text = match file {
        Some(p) => std::fs::read(p).map_err(|e| KeyError::Read(p.to_path_buf(), e))?,
        None => std::env::var_os(KEY_ENV).ok_or(KeyError::Missing)?.into_encoded_bytes(),
    };
    let trimmed = text.trim_ascii();
    ClusterKey::new(trimmed.to_vec()).map_err(KeyError::Invalid)
}
