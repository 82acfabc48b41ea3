//! Evaluation and adaptation tasks on top of a dual encoder (VQA on a cross-modal encoder, captioning with a decoder).
//!
//! What belongs here: the standard battery users judge a vision-language model by: zero-shot
//! classification with prompt ensembles, image↔text retrieval, linear probes and k-shot
//! adaptation (Tip-Adapter and the harness later methods plug into), with their metrics; visual
//! question answering ([`vqa`]), captioning ([`caption`]); later dense and grounding tasks. What does not: the models and objectives
//! (`vlp-align`), data formats (`vlp-data`), the training loop (`vlp-train`).

pub mod adapt;
pub mod battery;
pub mod bundle;
pub mod caption;
pub mod compositional;
pub mod embed;
pub mod error;
pub mod fewshot;
pub mod localisation;
pub mod probe;
pub mod report;
pub mod retrieval;
pub mod scoring;
pub mod sts;
pub mod templates;
pub mod vqa;
pub mod zeroshot;

pub use error::{Result, TaskError};
