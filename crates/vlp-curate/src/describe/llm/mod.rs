//! A client for OpenAI-compatible chat-completion servers (llama.cpp's `llama-server`, vLLM,
//! Ollama, hosted endpoints): `POST {base_url}/chat/completions`, the answer in
//! `choices[0].message.content`.

mod cache;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DescribeError, Description, DescriptionSource, ImageSubject, parse_list};
use cache::AnswerCache;

/// Settings of an [`LlmClient`] (the `[llm]` table of a config file).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Base URL of the API up to and including its version (`http://127.0.0.1:8080/v1` for
    /// llama-server, `http://127.0.0.1:11434/v1` for Ollama); unset: `$VLP_LLM_BASE_URL`.
    pub base_url: Option<String>,
    /// Model name sent with every request; unset: `$VLP_LLM_MODEL`.
    pub model: Option<String>,
    /// API key sent as a bearer token; unset: the variable named by `api_key_env`, and no
    /// `Authorization` header when that is unset too (local servers need none).
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Environment variable that holds the API key.
    pub api_key_env: String,
    /// Seconds one request may take, connection to last byte.
    pub timeout_s: f64,
    /// Retries after a timeout, a dropped connection, HTTP 408, 429 or 5xx (other errors are not
    /// retried: a wrong key or URL does not get better).
    pub max_retries: u32,
    /// First wait before a retry, in seconds; doubles with each retry.
    pub backoff_s: f64,
    /// Longest wait before a retry, also the cap on a server's `Retry-After`.
    pub max_backoff_s: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Most tokens per answer.
    pub max_tokens: u32,
    /// Sampling seed sent with each request (servers that honour it answer reproducibly).
    pub seed: u64,
    /// Folder of cached answers; unset: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Answer from the cache only: a miss is an error instead of a request.
    pub offline: bool,
    /// The system message of every request.
    pub system_prompt: String,
    /// The request for class descriptions: `{class}` is the class name, `{n}` how many.
    pub class_prompt: String,
    /// The request for image descriptions: `{caption}`, `{objects}` and `{n}`.
    pub image_prompt: String,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            model: None,
            api_key: None,
            api_key_env: "VLP_LLM_API_KEY".into(),
            timeout_s: 60.0,
            max_retries: 3,
            backoff_s: 1.0,
            max_backoff_s: 30.0,
            concurrency: 4,
            temperature: 0.7,
            max_tokens: 512,
            seed: 0,
            cache_dir: None,
            offline: false,
            system_prompt: "You write short, concrete visual descriptions for image recognition."
                .into(),
            // CuPL's and GIST's prompts ask what the class looks like; a numbered list keeps the
            // answer parseable across models.
            class_prompt: "Write {n} different short sentences describing what a {class} looks \
                           like in an image. Answer with a numbered list, one sentence per line, \
                           and nothing else."
                .into(),
            image_prompt: "An image has the caption \"{caption}\" and shows: {objects}. Write {n} \
                           different short sentences describing what the image shows. Answer \
                           with a numbered list, one sentence per line, and nothing else."
                .into(),
        }
    }
}

impl std::fmt::Debug for LlmConfig {
    // By hand so that the API key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("api_key_env", &self.api_key_env)
            .field("timeout_s", &self.timeout_s)
            .field("max_retries", &self.max_retries)
            .field("concurrency", &self.concurrency)
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

/// One chat-completion request body; also the cache's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    temperature: f32,
    max_tokens: u32,
    seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

/// Counts since the client was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LlmStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Retries among them.
    pub retries: u64,
    /// Answers served from the cache.
    pub cache_hits: u64,
}

/// Why one attempt failed.
enum Failure {
    /// Worth another try, after the server's `Retry-After` if it sent one.
    Transient(String, Option<Duration>),
    /// Not worth another try.
    Fatal(String),
}

/// A client for an OpenAI-compatible chat-completion server, with retries, a concurrency limit
/// and an on-disk answer cache.
pub struct LlmClient {
    server: String,
    url: String,
    model: String,
    api_key: Option<String>,
    config: LlmConfig,
    agent: ureq::Agent,
    pool: rayon::ThreadPool,
    cache: Option<AnswerCache>,
    requests: AtomicU64,
    retries: AtomicU64,
    cache_hits: AtomicU64,
}

fn invalid(field: &str, reason: impl Into<String>) -> DescribeError {
    DescribeError::Invalid {
        subject: format!("llm.{field}"),
        reason: reason.into(),
    }
}

/// The first 200 characters of a server's answer on one line, for error messages.
fn snippet(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

impl LlmClient {
    /// A client for `config`, with the base URL, model and key completed from the environment.
    pub fn new(config: LlmConfig) -> Result<Self, DescribeError> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let server = config
            .base_url
            .clone()
            .or_else(|| from_env("VLP_LLM_BASE_URL"))
            .ok_or_else(|| {
                invalid(
                    "base_url",
                    "no LLM server: set base_url (e.g. http://127.0.0.1:8080/v1) or $VLP_LLM_BASE_URL",
                )
            })?;
        let server = server.trim().trim_end_matches('/').to_string();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(invalid(
                "base_url",
                format!("{server:?} is not an http:// or https:// URL"),
            ));
        }
        if server.starts_with("https://") && !cfg!(feature = "tls") {
            return Err(invalid(
                "base_url",
                format!(
                    "{server} needs TLS, and this build has none: rebuild with the `tls` feature \
                     (`cargo install vlp-cli --features tls`), or use a local http:// server"
                ),
            ));
        }
        let model = config
            .model
            .clone()
            .or_else(|| from_env("VLP_LLM_MODEL"))
            .ok_or_else(|| invalid("model", "no model name: set model or $VLP_LLM_MODEL"))?;
        let api_key = config
            .api_key
            .clone()
            .or_else(|| from_env(&config.api_key_env));
        if !(config.timeout_s.is_finite() && config.timeout_s > 0.0) {
            return Err(invalid(
                "timeout_s",
                format!("{} is not > 0", config.timeout_s),
            ));
        }
        if !(config.backoff_s >= 0.0 && config.max_backoff_s >= config.backoff_s) {
            return Err(invalid(
                "backoff_s",
                format!(
                    "need 0 <= backoff_s <= max_backoff_s (got {} and {})",
                    config.backoff_s, config.max_backoff_s
                ),
            ));
        }
        if config.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if !config.class_prompt.contains("{class}") {
            return Err(invalid("class_prompt", "must contain {class}"));
        }
        if !(config.image_prompt.contains("{caption}") || config.image_prompt.contains("{objects}"))
        {
            return Err(invalid(
                "image_prompt",
                "must contain {caption} or {objects}",
            ));
        }
        if config.offline && config.cache_dir.is_none() {
            return Err(invalid("offline", "answering offline needs a cache_dir"));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(config.timeout_s)))
            .http_status_as_error(false)
            .build()
            .into();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.concurrency)
            .thread_name(|i| format!("vlp-llm-{i}"))
            .build()
            .map_err(|e| invalid("concurrency", e.to_string()))?;
        Ok(Self {
            url: format!("{server}/chat/completions"),
            server,
            model,
            api_key,
            cache: config.cache_dir.clone().map(AnswerCache::new),
            config,
            agent,
            pool,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        })
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Counts of requests, retries and cache hits so far.
    pub fn stats(&self) -> LlmStats {
        LlmStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// The answer to a free-form `prompt` (after the configured system message), as text.
    pub fn ask(&self, prompt: &str) -> Result<String, DescribeError> {
        self.complete(&format!("prompt {:?}", snippet(prompt)), prompt)
    }

    /// Up to `n` items of a list-shaped answer to a free-form `prompt`; an answer without a
    /// single item is an error.
    pub fn ask_list(&self, prompt: &str, n: usize) -> Result<Vec<String>, DescribeError> {
        self.complete_list(&format!("prompt {:?}", snippet(prompt)), prompt, n)
    }

    fn request(&self, prompt: &str) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages: vec![
                Message {
                    role: "system".into(),
                    content: self.config.system_prompt.clone(),
                },
                Message {
                    role: "user".into(),
                    content: prompt.to_string(),
                },
            ],
            temperature: self.config.temperature,
            max_tokens: self.config.max_tokens,
            seed: self.config.seed,
        }
    }

    fn complete_list(
        &self,
        subject: &str,
        prompt: &str,
        n: usize,
    ) -> Result<Vec<String>, DescribeError> {
        let content = self.complete(subject, prompt)?;
        let items = parse_list(&content, n);
        if items.is_empty() && n > 0 {
            return Err(DescribeError::Malformed {
                server: self.server.clone(),
                subject: subject.to_string(),
                reason: format!("no list items in the answer {:?}", snippet(&content)),
            });
        }
        Ok(items)
    }

    /// The answer's text: from the cache, else from the server (then cached).
    fn complete(&self, subject: &str, prompt: &str) -> Result<String, DescribeError> {
        let request = self.request(prompt);
        if let Some(cache) = &self.cache {
            if let Some(content) = cache.get(&self.server, &request)? {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(content);
            }
            if self.config.offline {
                return Err(DescribeError::Cache {
                    path: cache.path(&self.server, &request),
                    reason: format!(
                        "offline, and no cached answer for {subject} in {}",
                        cache.dir().display()
                    ),
                });
            }
        }
        let body = serde_json::to_string(&request).expect("a request serialises");
        let text = self.post_with_retries(subject, &body)?;
        let content = self.content(subject, &text)?;
        if let Some(cache) = &self.cache {
            cache.put(&self.server, &request, &content)?;
        }
        Ok(content)
    }

    fn content(&self, subject: &str, text: &str) -> Result<String, DescribeError> {
        let malformed = |reason: String| DescribeError::Malformed {
            server: self.server.clone(),
            subject: subject.to_string(),
            reason,
        };
        let response: ChatResponse = serde_json::from_str(text)
            .map_err(|e| malformed(format!("not a chat completion ({e}): {:?}", snippet(text))))?;
        let content = response
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| {
                malformed(format!(
                    "no choices[0].message.content in {:?}",
                    snippet(text)
                ))
            })?;
        if content.trim().is_empty() {
            return Err(malformed("the answer is empty".into()));
        }
        Ok(content)
    }

    fn post_with_retries(&self, subject: &str, body: &str) -> Result<String, DescribeError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let failure = match self.post(body) {
                Ok(text) => return Ok(text),
                Err(f) => f,
            };
            let give_up = |reason: String| DescribeError::Request {
                server: self.server.clone(),
                subject: subject.to_string(),
                attempts: attempt,
                reason,
            };
            match failure {
                Failure::Fatal(reason) => return Err(give_up(reason)),
                Failure::Transient(reason, _) if attempt > self.config.max_retries => {
                    return Err(give_up(reason));
                }
                Failure::Transient(_, retry_after) => {
                    let backoff = self.config.backoff_s * 2f64.powi(attempt as i32 - 1);
                    let wait = retry_after
                        .map_or(backoff, |d| d.as_secs_f64())
                        .min(self.config.max_backoff_s);
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_secs_f64(wait));
                }
            }
        }
    }

    fn post(&self, body: &str) -> Result<String, Failure> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = match request.send(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => {
                return Err(Failure::Transient(
                    format!("no answer within {} s (timeout_s)", self.config.timeout_s),
                    None,
                ));
            }
            Err(e @ (ureq::Error::Io(_) | ureq::Error::ConnectionFailed)) => {
                return Err(Failure::Transient(e.to_string(), None));
            }
            Err(e) => return Err(Failure::Fatal(e.to_string())),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = match response.body_mut().read_to_string() {
            Ok(t) => t,
            Err(ureq::Error::Timeout(_)) => {
                return Err(Failure::Transient(
                    format!(
                        "the answer did not finish within {} s (timeout_s)",
                        self.config.timeout_s
                    ),
                    None,
                ));
            }
            Err(e) => return Err(Failure::Transient(format!("reading the answer: {e}"), None)),
        };
        match status {
            200..=299 => Ok(text),
            408 | 429 | 500..=599 => Err(Failure::Transient(
                format!("HTTP {status}: {}", snippet(&text)),
                retry_after,
            )),
            _ => Err(Failure::Fatal(format!("HTTP {status}: {}", snippet(&text)))),
        }
    }

    fn class_prompt(&self, class: &str, n: usize) -> String {
        self.config
            .class_prompt
            .replace("{class}", class)
            .replace("{n}", &n.to_string())
    }

    fn image_prompt(&self, subject: &ImageSubject, n: usize) -> String {
        let caption = subject
            .caption
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or("none");
        let objects = if subject.objects.is_empty() {
            "nothing listed".to_string()
        } else {
            subject.objects.join(", ")
        };
        self.config
            .image_prompt
            .replace("{caption}", caption)
            .replace("{objects}", &objects)
            .replace("{n}", &n.to_string())
    }
}

impl DescriptionSource for LlmClient {
    fn describe_observed(
        &self,
        classes: &[String],
        per_class: usize,
        on_class_done: &(dyn Fn() + Sync),
    ) -> Result<Vec<Vec<Description>>, DescribeError> {
        // Every class is asked for even when one fails, so the cache keeps every answer that
        // came; the first failure in class order is reported.
        let results: Vec<Result<Vec<Description>, DescribeError>> = self.pool.install(|| {
            classes
                .par_iter()
                .map(|class| {
                    let subject = format!("class {class:?}");
                    let items = self.complete_list(
                        &subject,
                        &self.class_prompt(class, per_class),
                        per_class,
                    );
                    on_class_done();
                    Ok(items?
                        .into_iter()
                        .map(|text| Description {
                            class: class.clone(),
                            text,
                            wrong: false,
                        })
                        .collect())
                })
                .collect()
        });
        results.into_iter().collect()
    }

    fn describe_image(
        &self,
        subject: &ImageSubject,
        n: usize,
    ) -> Result<Vec<String>, DescribeError> {
        if subject.is_empty() {
            return Err(DescribeError::Invalid {
                subject: format!("image {:?}", subject.key),
                reason: "nothing to describe: no caption and no objects".into(),
            });
        }
        self.complete_list(
            &format!("image {:?}", subject.key),
            &self.image_prompt(subject, n),
            n,
        )
    }

    fn name(&self) -> String {
        format!("llm({}, {})", self.server, self.model)
    }
}
