//! The on-disk answer cache: one JSON file per distinct request, so reruns are deterministic and
//! work offline.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ChatRequest;
use crate::describe::DescribeError;

/// A folder of answers keyed by the SHA-256 of the server's URL and the full request body
/// (model, messages, sampling settings): any change to the prompt or the settings is a new
/// entry, never a stale answer.
#[derive(Debug, Clone)]
pub(super) struct AnswerCache {
    dir: PathBuf,
}

/// What one cache file holds: the request in full (checked on every hit, so an edited or
/// colliding file is an error rather than a wrong answer) and the raw answer text (parsed on
/// every read, so parser fixes apply to cached answers).
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    server: String,
    request: ChatRequest,
    content: String,
}

impl AnswerCache {
    pub(super) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds (or would hold) the answer to `request` from `server`.
    pub(super) fn path(&self, server: &str, request: &ChatRequest) -> PathBuf {
        let body = serde_json::to_string(request).expect("a request serialises");
        let mut h = Sha256::new();
        h.update(server.as_bytes());
        h.update([0u8]);
        h.update(body.as_bytes());
        self.dir.join(format!("{:x}.json", h.finalize()))
    }

    /// The cached answer, `None` on a miss.
    pub(super) fn get(
        &self,
        server: &str,
        request: &ChatRequest,
    ) -> Result<Option<String>, DescribeError> {
        let path = self.path(server, request);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cache_error(&path, e.to_string())),
        };
        let entry: Entry = serde_json::from_slice(&bytes)
            .map_err(|e| cache_error(&path, format!("not a cache entry: {e}")))?;
        if entry.server != server || &entry.request != request {
            return Err(cache_error(
                &path,
                "holds a different request than its name says (edited by hand?); delete it".into(),
            ));
        }
        Ok(Some(entry.content))
    }

    /// Stores an answer atomically (a reader never sees half an entry).
    pub(super) fn put(
        &self,
        server: &str,
        request: &ChatRequest,
        content: &str,
    ) -> Result<(), DescribeError> {
        let path = self.path(server, request);
        std::fs::create_dir_all(&self.dir).map_err(|e| cache_error(&self.dir, e.to_string()))?;
        let entry = Entry {
            server: server.to_string(),
            request: request.clone(),
            content: content.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&entry).expect("an entry serialises");
        vlp_core::io::write_atomic(&path, &bytes).map_err(|e| cache_error(&path, e.to_string()))
    }
}

fn cache_error(path: &Path, reason: String) -> DescribeError {
    DescribeError::Cache {
        path: path.to_path_buf(),
        reason,
    }
}
