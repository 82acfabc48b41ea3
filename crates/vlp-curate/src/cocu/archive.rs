//! The concept archive on disk: what `vlp curate cocu` writes and the CoCu method trains from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::CocuError;

/// One concept of an image's archive, by name, with its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedConcept {
    /// The gallery phrase.
    pub concept: String,
    /// `global / max + local`, the ranking score.
    pub score: f32,
    /// Similarity to the image.
    pub global: f32,
    /// That similarity over its mean over the reference images.
    pub local: f32,
}

/// One image's curated concepts, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// The image's key in its source.
    pub key: String,
    /// Its caption.
    pub caption: String,
    /// Its concepts, ranked.
    pub concepts: Vec<ArchivedConcept>,
}

/// Every image's curated concepts, and how they were curated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptArchive {
    /// Model, data, index, gallery size and settings of the curation run.
    pub summary: serde_json::Value,
    /// The images, in source order.
    pub images: Vec<ArchiveEntry>,
}

impl ConceptArchive {
    /// Reads an archive, naming the file in every error.
    pub fn read(path: &Path) -> Result<Self, CocuError> {
        let bad = |reason: String| CocuError::File {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let archive: Self = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "not a concept archive (from `vlp curate cocu`): {e}"
            ))
        })?;
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = archive.images.iter().find(|e| !seen.insert(e.key.as_str())) {
            return Err(bad(format!("image {:?} appears twice", dup.key)));
        }
        Ok(archive)
    }

    /// Writes the archive atomically.
    pub fn write(&self, path: &Path) -> Result<(), CocuError> {
        let bytes = serde_json::to_vec(self).expect("an archive serialises");
        vlp_core::io::write_atomic(path, &bytes).map_err(|e| CocuError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        let entry = |key: &str| ArchiveEntry {
            key: key.into(),
            caption: "a red circle".into(),
            concepts: vec![ArchivedConcept {
                concept: "blue star".into(),
                score: 1.5,
                global: 0.3,
                local: 1.2,
            }],
        };
        let a = ConceptArchive {
            summary: serde_json::json!({"neighbours": 8}),
            images: vec![entry("k1"), entry("k2")],
        };
        a.write(&path).unwrap();
        assert_eq!(ConceptArchive::read(&path).unwrap(), a);
        let twice = ConceptArchive {
            images: vec![entry("k1"), entry("k1")],
            ..a
        };
        twice.write(&path).unwrap();
        let err = ConceptArchive::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("a.json") && err.contains("\"k1\" appears twice"),
            "{err}"
        );
        std::fs::write(&path, b"[1, 2]").unwrap();
        assert!(
            ConceptArchive::read(&path)
                .unwrap_err()
                .to_string()
                .contains("not a concept archive")
        );
    }
}
