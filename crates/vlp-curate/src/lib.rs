//! Data curation: deciding which pairs to train on and what text to add.
//!
//! What belongs here: filters over image–text pairs computed from embeddings (CLIP-score
//! thresholds as used to build LAION, near-duplicate removal), and sources of extra descriptions
//! (the [`describe::DescriptionSource`] trait, with an offline seeded template source that injects
//! a controlled share of wrong descriptions, so methods that must survive noisy LLM output can be
//! tested, and [`describe::LlmClient`] for OpenAI-compatible chat-completion servers, with
//! retries, a concurrency limit and an on-disk answer cache), and CoCu's concept archives
//! ([`cocu`]); later, prompt optimisation. What does not: computing the embeddings
//! (`vlp-tasks`), datasets and formats (`vlp-data`), training (`vlp-train`).

pub mod cocu;
pub mod describe;
pub mod filter;
