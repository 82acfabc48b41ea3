//! CoCu's concept curation (Xing et al., "Rewrite Caption Semantics: Bridging Semantic Gaps for
//! Language-Supervised Semantic Segmentation", NeurIPS 2023; code `xing0047/rewrite`,
//! `rewrite/curation.py`).
//!
//! Web captions leave out most of what an image shows. CoCu finds the missing concepts: a
//! [`ConceptGallery`] of nouns and phrases; each caption's concepts (its 1–4-grams in the
//! gallery); for an anchor image, the concepts of the captions of its nearest images by CLIP
//! image embedding ([`nearest`], vision-driven expansion); ranked by how much better they match
//! the anchor than those neighbours ([`rank_concepts`], text-to-vision-guided ranking); and the
//! few an image trains with chosen by [`select_concepts`]. The archive ([`concept_archive`]) is
//! kept whole, so the dense tasks can reuse it.

mod archive;
mod gallery;
mod rank;
mod sample;

pub use archive::{ArchiveEntry, ArchivedConcept, ConceptArchive};
pub use gallery::{ConceptGallery, MAX_WORDS, pluralize};
pub use rank::{ScoredConcept, concept_archive, nearest, rank_concepts};
pub use sample::{Selection, select_concepts};

/// The prompt each concept is embedded with (the code's `f'a photo of a {concept}'`).
pub const CONCEPT_PROMPT: &str = "a photo of a {}";

/// What went wrong while curating.
#[derive(Debug, thiserror::Error)]
pub enum CocuError {
    /// A gallery or archive file could not be read or makes no sense.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}
