//! The client against an HTTP server started inside each test that speaks the chat-completion
//! protocol, including slow, failing and malformed answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// What the server answers to one request.
enum Reply {
    /// 200 with a chat completion whose content is this text.
    Answer(String),
    /// This status and body.
    Status(u16, String),
    /// This status, body and `Retry-After` seconds.
    RetryAfter(u16, u32),
    /// After this long, the inner reply.
    Slow(Duration, Box<Reply>),
}

fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
    })
    .to_string()
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: serde_json::Value,
}

type Script = dyn Fn(usize, &serde_json::Value) -> Reply + Send + Sync;

/// A chat-completion server on a free local port; `script(i, body)` answers the i-th connection.
struct Server {
    url: String,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight_peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(script: impl Fn(usize, &serde_json::Value) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight_peak = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        {
            let (connections, seen, stop) = (connections.clone(), seen.clone(), stop.clone());
            let (in_flight, peak) = (in_flight.clone(), in_flight_peak.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let i = connections.fetch_add(1, Ordering::SeqCst);
                    let (seen, script) = (seen.clone(), script.clone());
                    let (in_flight, peak) = (in_flight.clone(), peak.clone());
                    std::thread::spawn(move || {
                        handle(stream, i, &seen, &*script, &in_flight, &peak);
                    });
                }
            });
        }
        Self {
            url,
            connections,
            seen,
            in_flight_peak,
            stop,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(
            self.url
                .trim_start_matches("http://")
                .trim_end_matches("/v1"),
        );
    }
}

/// Serves one connection. A request counts as in flight from when it has been read to just
/// before its answer is written, so a client's next request can never overlap the count of the
/// one it follows.
fn handle(
    stream: TcpStream,
    i: usize,
    seen: &Mutex<Vec<Seen>>,
    script: &Script,
    in_flight: &AtomicUsize,
    peak: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    seen.lock().unwrap().push(Seen {
        path,
        authorization,
        body: body.clone(),
    });
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    peak.fetch_max(now, Ordering::SeqCst);
    let mut reply = script(i, &body);
    while let Reply::Slow(wait, inner) = reply {
        std::thread::sleep(wait);
        reply = *inner;
    }
    in_flight.fetch_sub(1, Ordering::SeqCst);
    let (status, text, extra) = match reply {
        Reply::Answer(content) => (200, completion(&content), String::new()),
        Reply::Status(code, text) => (code, text, String::new()),
        Reply::RetryAfter(code, secs) => (code, "busy".into(), format!("Retry-After: {secs}\r\n")),
        Reply::Slow(..) => unreachable!(),
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
        text.len()
    );
}

/// The user message of a request.
fn prompt(body: &serde_json::Value) -> String {
    body["messages"][1]["content"].as_str().unwrap().to_string()
}

/// Answers each class prompt with a numbered list naming the class.
fn lists(_: usize, body: &serde_json::Value) -> Reply {
    let p = prompt(body);
    let class = p
        .split(" looks like")
        .next()
        .unwrap()
        .rsplit("what a ")
        .next()
        .unwrap();
    Reply::Answer(format!(
        "Here are some:\n1. A {class} on a plain background.\n2. The {class}, drawn flat.\n3. One {class}."
    ))
}

fn config(server: &Server) -> LlmConfig {
    LlmConfig {
        base_url: Some(server.url.clone()),
        model: Some("test-model".into()),
        timeout_s: 5.0,
        max_retries: 2,
        backoff_s: 0.01,
        max_backoff_s: 0.05,
        ..Default::default()
    }
}

fn classes() -> Vec<String> {
    ["red circle", "blue square", "green star"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn descriptions_arrive_parsed_in_class_order() {
    let server = Server::start(lists);
    let client = LlmClient::new(LlmConfig {
        api_key: Some("sk-test".into()),
        ..config(&server)
    })
    .unwrap();
    let done = AtomicUsize::new(0);
    let d = client
        .describe_observed(&classes(), 2, &|| {
            done.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(done.into_inner(), 3);
    assert_eq!(d.len(), 3);
    for (class, list) in classes().iter().zip(&d) {
        let texts: Vec<&str> = list.iter().map(|x| x.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                format!("A {class} on a plain background."),
                format!("The {class}, drawn flat.")
            ]
        );
        assert!(list.iter().all(|x| &x.class == class && !x.wrong));
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.path, "/v1/chat/completions");
        assert_eq!(s.authorization.as_deref(), Some("Bearer sk-test"));
        assert_eq!(s.body["model"], "test-model");
        assert_eq!(s.body["messages"][0]["role"], "system");
        assert!(prompt(&s.body).starts_with("Write 2 different short sentences"));
    }
    assert_eq!(
        client.stats(),
        LlmStats {
            requests: 3,
            retries: 0,
            cache_hits: 0
        }
    );
    // Image-conditioned descriptions carry the caption and objects into the prompt.
    let subject = ImageSubject {
        key: "00042".into(),
        caption: Some("a red circle".into()),
        objects: vec!["red circle".into(), "blue square".into()],
    };
    let server = Server::start(|_, _| Reply::Answer("- a red circle beside a blue square".into()));
    let client = LlmClient::new(config(&server)).unwrap();
    assert_eq!(
        client.describe_image(&subject, 3).unwrap(),
        vec!["a red circle beside a blue square"]
    );
    let p = prompt(&server.seen()[0].body);
    assert!(
        p.contains("\"a red circle\"")
            && p.contains("red circle, blue square")
            && p.contains("Write 3"),
        "{p}"
    );
    assert_eq!(
        client.ask("Say hi.").unwrap(),
        "- a red circle beside a blue square"
    );
}

#[test]
fn transient_failures_are_retried_and_lasting_ones_named() {
    // A 500, then a 429 with Retry-After, then an answer.
    let server = Server::start(|i, body| match i {
        0 => Reply::Status(500, "{\"error\": \"overloaded\"}".into()),
        1 => Reply::RetryAfter(429, 0),
        _ => lists(i, body),
    });
    let client = LlmClient::new(config(&server)).unwrap();
    let d = client.describe(&classes()[..1], 3).unwrap();
    assert_eq!(d[0].len(), 3);
    assert_eq!(
        client.stats(),
        LlmStats {
            requests: 3,
            retries: 2,
            cache_hits: 0
        }
    );

    // A persistent 500: every attempt made, then an error naming the server and the class.
    let server = Server::start(|_, _| Reply::Status(503, "down for maintenance".into()));
    let client = LlmClient::new(config(&server)).unwrap();
    let err = client
        .describe(&classes()[1..2], 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&server.url)
            && err.contains("class \"blue square\"")
            && err.contains("3 attempt(s)")
            && err.contains("HTTP 503: down for maintenance"),
        "{err}"
    );
    assert_eq!(server.connections(), 3);

    // A wrong key is not retried.
    let server = Server::start(|_, _| Reply::Status(401, "invalid api key".into()));
    let client = LlmClient::new(config(&server)).unwrap();
    let err = client.describe(&classes()[..1], 3).unwrap_err().to_string();
    assert!(
        err.contains("1 attempt(s)") && err.contains("HTTP 401"),
        "{err}"
    );
    assert_eq!(server.connections(), 1);
}

#[test]
fn a_timeout_and_a_malformed_answer_are_clear_errors() {
    let server =
        Server::start(|i, body| Reply::Slow(Duration::from_millis(1500), Box::new(lists(i, body))));
    let client = LlmClient::new(LlmConfig {
        timeout_s: 0.2,
        max_retries: 1,
        ..config(&server)
    })
    .unwrap();
    let start = std::time::Instant::now();
    let err = client.describe(&classes()[2..], 2).unwrap_err().to_string();
    assert!(
        err.contains(&server.url)
            && err.contains("class \"green star\"")
            && err.contains("2 attempt(s)")
            && err.contains("timeout_s"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(1400),
        "{:?}",
        start.elapsed()
    );

    for (body, expect) in [
        ("<html>bad gateway</html>", "not a chat completion"),
        ("{\"choices\": []}", "no choices[0].message.content"),
    ] {
        let server = Server::start(move |_, _| Reply::Status(200, body.into()));
        let client = LlmClient::new(config(&server)).unwrap();
        let err = client.describe(&classes()[..1], 2).unwrap_err();
        assert!(matches!(err, DescribeError::Malformed { .. }), "{err:?}");
        let err = err.to_string();
        assert!(
            err.contains(&server.url)
                && err.contains("class \"red circle\"")
                && err.contains(expect),
            "{err}"
        );
        // Malformed answers are not retried: the server said what it had to say.
        assert_eq!(server.connections(), 1);
    }
    let server = Server::start(|_, _| Reply::Answer("   ".into()));
    let client = LlmClient::new(config(&server)).unwrap();
    let err = client.describe(&classes()[..1], 2).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn the_second_run_is_served_from_the_cache_without_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(lists);
    let cfg = LlmConfig {
        cache_dir: Some(dir.path().join("llm")),
        ..config(&server)
    };
    let first = LlmClient::new(cfg.clone())
        .unwrap()
        .describe(&classes(), 3)
        .unwrap();
    assert_eq!(server.connections(), 3);
    let again = LlmClient::new(cfg.clone()).unwrap();
    assert_eq!(again.describe(&classes(), 3).unwrap(), first);
    assert_eq!(server.connections(), 3, "the cache answered");
    assert_eq!(again.stats().cache_hits, 3);
    assert_eq!(again.stats().requests, 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("llm")).unwrap().count(),
        3
    );

    // Offline: hits are served, a miss (another prompt) is an error naming the class.
    let offline = LlmClient::new(LlmConfig {
        offline: true,
        ..cfg.clone()
    })
    .unwrap();
    assert_eq!(offline.describe(&classes(), 3).unwrap(), first);
    let err = offline
        .describe(&["purple hexagon".to_string()], 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("offline") && err.contains("purple hexagon"),
        "{err}"
    );
    assert_eq!(server.connections(), 3);

    // Another sampling setting is another request, not a stale answer.
    let warmer = LlmClient::new(LlmConfig {
        temperature: 1.0,
        ..cfg.clone()
    })
    .unwrap();
    warmer.describe(&classes()[..1], 3).unwrap();
    assert_eq!(server.connections(), 4);

    // A damaged entry is an error naming its file, not a wrong answer (every entry damaged:
    // which file holds which request is the hash's business).
    let entries: Vec<PathBuf> = std::fs::read_dir(dir.path().join("llm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for e in &entries {
        std::fs::write(e, b"{ truncated").unwrap();
    }
    let err = LlmClient::new(cfg)
        .unwrap()
        .describe(&classes(), 3)
        .unwrap_err()
        .to_string();
    assert!(
        entries
            .iter()
            .any(|e| err.contains(&e.display().to_string()))
            && err.contains("not a cache entry"),
        "{err}"
    );
}

#[test]
fn requests_in_flight_stay_within_the_concurrency_limit() {
    let server =
        Server::start(|i, body| Reply::Slow(Duration::from_millis(150), Box::new(lists(i, body))));
    let many: Vec<String> = (0..6).map(|i| format!("shape {i}")).collect();
    let client = LlmClient::new(LlmConfig {
        concurrency: 2,
        ..config(&server)
    })
    .unwrap();
    let d = client.describe(&many, 1).unwrap();
    assert_eq!(d.len(), 6);
    for (class, list) in many.iter().zip(&d) {
        assert_eq!(list[0].text, format!("A {class} on a plain background."));
    }
    assert_eq!(server.in_flight_peak.load(Ordering::SeqCst), 2);
}

#[test]
fn bad_settings_name_their_field() {
    let cases = [
        (
            LlmConfig {
                base_url: Some("ftp://x".into()),
                model: Some("m".into()),
                ..Default::default()
            },
            "llm.base_url",
        ),
        (
            LlmConfig {
                base_url: Some("http://127.0.0.1:1/v1".into()),
                model: Some("m".into()),
                concurrency: 0,
                ..Default::default()
            },
            "llm.concurrency",
        ),
        (
            LlmConfig {
                base_url: Some("http://127.0.0.1:1/v1".into()),
                model: Some("m".into()),
                class_prompt: "describe things".into(),
                ..Default::default()
            },
            "llm.class_prompt",
        ),
        (
            LlmConfig {
                base_url: Some("http://127.0.0.1:1/v1".into()),
                model: Some("m".into()),
                offline: true,
                ..Default::default()
            },
            "llm.offline",
        ),
    ];
    for (cfg, field) in cases {
        let err = LlmClient::new(cfg).err().expect("refused").to_string();
        assert!(err.starts_with(field), "{err}");
    }
    let parsed: Result<LlmConfig, _> = toml::from_str("base_url = \"http://x/v1\"\nmodle = \"m\"");
    assert!(parsed.unwrap_err().to_string().contains("modle"));
    let key = format!(
        "{:?}",
        LlmConfig {
            api_key: Some("sk-secret".into()),
            ..Default::default()
        }
    );
    assert!(!key.contains("sk-secret"), "{key}");
}

#[test]
fn the_readme_settings_parse() {
    let readme = include_str!("../../../../../README.md");
    let section = readme
        .split("### Descriptions from an LLM server")
        .nth(1)
        .expect("the README section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let cfg: LlmConfig = toml::from_str(block).unwrap();
    assert_eq!(cfg.base_url.as_deref(), Some("http://127.0.0.1:8080/v1"));
    let defaults = LlmConfig::default();
    assert_eq!(
        (
            cfg.timeout_s,
            cfg.max_retries,
            cfg.concurrency,
            cfg.temperature
        ),
        (
            defaults.timeout_s,
            defaults.max_retries,
            defaults.concurrency,
            defaults.temperature
        )
    );
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_without_tls_is_refused_with_the_fix() {
    let e = LlmClient::new(LlmConfig {
        base_url: Some("https://api.example.com/v1".into()),
        model: Some("m".into()),
        ..Default::default()
    })
    .err()
    .expect("an https URL needs TLS")
    .to_string();
    assert!(
        e.contains("https://api.example.com/v1") && e.contains("--features tls"),
        "{e}"
    );
}
