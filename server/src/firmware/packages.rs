//! Package contents on disk, named by their SHA-256: an upload streams into a temporary
//! file while it is hashed and counted, and only a complete one within the size limit is
//! renamed into place (and synced), so a truncated or over-size upload leaves nothing.
//! Two packages with the same bytes share one file.

use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

/// Directory inside the data directory.
pub const DIR: &str = "packages";
const TMP_PREFIX: &str = ".upload-";

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the package is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the upload ended early: {0}")]
    Truncated(String),
    #[error("the package is empty")]
    Empty,
    #[error("cannot store the package: {0}")]
    Io(#[from] std::io::Error),
}

/// Where package files live.
#[derive(Debug)]
pub struct PackageFiles {
    dir: PathBuf,
}

impl PackageFiles {
    /// Opens (creating) the directory and removes uploads a crash left half-written.
    pub fn open(data_dir: &Path) -> std::io::Result<PackageFiles> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(PackageFiles { dir })
    }

    /// The file of the content with this SHA-256 (hex).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Removes a content file no package uses any more.
    pub fn remove(&self, sha256: &str) {
        if let Err(e) = std::fs::remove_file(self.path(sha256)) {
            tracing::warn!(%sha256, error = %e, "package file not removed");
        }
    }

    /// Streams an upload to disk; answers its SHA-256 (hex) and size.
    pub async fn receive<S, E>(&self, mut body: S, max: u64) -> Result<(String, u64), UploadError>
    where
        S: Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}", crate::hex::encode(&name)));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = openssl::sha::Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| UploadError::Truncated(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(UploadError::TooLarge(max));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            if size == 0 {
                return Err(UploadError::Empty);
            }
            file.sync_all().await?;
            Ok((crate::hex::encode(&hasher.finish()), size))
        }
        .await;
        match result {
            Ok((sha, size)) => {
                let dest = self.path(&sha);
                if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
                    let _ = tokio::fs::remove_file(&tmp).await;
                } else {
                    tokio::fs::rename(&tmp, &dest).await?;
                    // The rename is durable only once the directory is.
                    tokio::fs::File::open(&self.dir).await?.sync_all().await?;
                }
                Ok((sha, size))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}
