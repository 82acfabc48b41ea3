//! Sources of descriptions: what GIST, DesCo, ProAPO and CoCu ask a language model for.
//!
//! [`DescriptionSource`] is the one interface; [`TemplateDescriptions`] is the offline, seeded
//! default (with a controlled share of wrong descriptions, so that methods meant to survive noisy
//! LLM output are tested against noise) and [`LlmClient`] talks to any OpenAI-compatible
//! chat-completion server (llama.cpp's `llama-server`, vLLM, Ollama, hosted endpoints).

mod llm;
mod parse;
mod template;

pub use llm::{LlmClient, LlmConfig, LlmStats};
pub use parse::parse_list;
pub use template::TemplateDescriptions;

use serde::{Deserialize, Serialize};

/// One generated description of a class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// The class it is meant to describe.
    pub class: String,
    /// The text.
    pub text: String,
    /// `true` when the source knows the text describes another class: only the template
    /// source's injected noise sets it (a real LLM gives no such flag), so tests can measure
    /// how a method copes with wrong descriptions.
    pub wrong: bool,
}

/// What is known about one image, for image-conditioned descriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSubject {
    /// The image's key in its source (named in errors).
    pub key: String,
    /// Its caption, if any.
    pub caption: Option<String>,
    /// Objects detected or annotated in it ("red circle", "blue square").
    pub objects: Vec<String>,
}

impl ImageSubject {
    /// `true` when there is nothing to condition a description on.
    pub fn is_empty(&self) -> bool {
        self.caption.as_deref().is_none_or(|c| c.trim().is_empty()) && self.objects.is_empty()
    }
}

/// Why descriptions could not be had. Every variant names what was being described.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    /// The server could not be reached, refused, or kept failing after every retry.
    #[error(
        "LLM server {server}: request for {subject} failed after {attempts} attempt(s): {reason}"
    )]
    Request {
        /// Base URL of the server.
        server: String,
        /// What was being described (`class "red circle"`, `image "00042"`, `prompt`).
        subject: String,
        /// Attempts made, retries included.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The server answered, but not with what the protocol or the prompt asked for.
    #[error("LLM server {server}: malformed answer for {subject}: {reason}")]
    Malformed {
        /// Base URL of the server.
        server: String,
        /// What was being described.
        subject: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The on-disk answer cache could not be read or written, or (offline) lacks the answer.
    #[error("description cache {path}: {reason}")]
    Cache {
        /// The cache file at fault.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The request itself is invalid (bad configuration, nothing to describe).
    #[error("{subject}: {reason}")]
    Invalid {
        /// What was being described, or the configuration field at fault.
        subject: String,
        /// What is wrong.
        reason: String,
    },
}

/// Anything that can describe classes and images: an LLM endpoint ([`LlmClient`]) or the
/// offline [`TemplateDescriptions`].
pub trait DescriptionSource: Sync {
    /// Up to `per_class` descriptions of each class, in the order of `classes`; calls
    /// `on_class_done` once per finished class (from any thread), for progress bars.
    fn describe_observed(
        &self,
        classes: &[String],
        per_class: usize,
        on_class_done: &(dyn Fn() + Sync),
    ) -> Result<Vec<Vec<Description>>, DescribeError>;

    /// Up to `n` descriptions of one image, conditioned on its caption and objects.
    fn describe_image(
        &self,
        subject: &ImageSubject,
        n: usize,
    ) -> Result<Vec<String>, DescribeError>;

    /// A short name for reports (`template(seed 0, error rate 0.2)`, `llm(URL, MODEL)`).
    fn name(&self) -> String;

    /// [`describe_observed`](Self::describe_observed) without progress.
    fn describe(
        &self,
        classes: &[String],
        per_class: usize,
    ) -> Result<Vec<Vec<Description>>, DescribeError> {
        self.describe_observed(classes, per_class, &|| {})
    }
}
