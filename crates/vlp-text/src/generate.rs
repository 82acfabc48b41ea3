//! Decoding: greedy search, beam search and sampling with temperature, top-k and top-p, over any
//! model that gives next-token logits for token prefixes (a causal LM with or without a KV
//! cache, a captioning decoder). Conventions follow Hugging Face's `generate`: logits are
//! turned into log-probabilities per step, the sampling warpers apply temperature, then top-k,
//! then top-p, and beam search ranks finished hypotheses by `log p / length^length_penalty`.

use vlp_core::rng::Rng;

use crate::{Result, TextError};

/// A model seen by the decoders.
pub trait NextTokenLogits {
    /// Number of tokens the model scores.
    fn vocab_size(&self) -> usize;

    /// For each prefix (the prompt and the tokens generated so far), the logits of the next
    /// token, `vocab_size` each. `&mut` so that a model can keep a cache between calls.
    fn next_logits(&mut self, prefixes: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
}

/// When generation stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateConfig {
    /// Most tokens generated after the prompt.
    pub max_new_tokens: usize,
    /// The end-of-sequence token: generation of a sequence stops after it (it is returned).
    pub eos: Option<u32>,
}

/// How [`sample`] draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// Logits are divided by it (> 0).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = all).
    pub top_p: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

/// One beam-search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens (the prompt excluded, the end token included when reached).
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities.
    pub log_prob: f64,
    /// `log_prob / tokens.len()^length_penalty`, what hypotheses are ranked by.
    pub score: f64,
}

fn invalid(reason: String) -> TextError {
    TextError::Generate { reason }
}

/// Log-softmax in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z = logits
        .iter()
        .map(|&l| (l as f64 - m).exp())
        .sum::<f64>()
        .ln()
        + m;
    logits.iter().map(|&l| l as f64 - z).collect()
}

/// Index of the largest value, the lowest index among ties.
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

fn logits_of(model: &mut dyn NextTokenLogits, prefixes: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
    let v = model.vocab_size();
    let out = model.next_logits(prefixes)?;
    if out.len() != prefixes.len() {
        return Err(invalid(format!(
            "the model scored {} prefixes of {}",
            out.len(),
            prefixes.len()
        )));
    }
    if let Some((i, l)) = out.iter().enumerate().find(|(_, l)| l.len() != v) {
        return Err(invalid(format!(
            "prefix {i}: {} logits for a vocabulary of {v}",
            l.len()
        )));
    }
    if let Some(i) = out.iter().position(|l| l.iter().any(|x| x.is_nan())) {
        return Err(invalid(format!("prefix {i}: NaN logits")));
    }
    Ok(out)
}

/// The most likely token at every step. Returns the generated tokens.
pub fn greedy(
    model: &mut dyn NextTokenLogits,
    prompt: &[u32],
    cfg: &GenerateConfig,
) -> Result<Vec<u32>> {
    let mut seq = prompt.to_vec();
    for _ in 0..cfg.max_new_tokens {
        let logits = logits_of(model, std::slice::from_ref(&seq))?;
        let t = argmax(&logits[0]) as u32;
        seq.push(t);
        if cfg.eos == Some(t) {
            break;
        }
    }
    Ok(seq[prompt.len()..].to_vec())
}

/// Beam search with `beams` hypotheses: every step extends each live hypothesis by every token
/// and keeps the `beams` most likely; a hypothesis ending in the end token is finished when it
/// ranks among the first `beams` candidates (Hugging Face's rule). Stops when `beams`
/// hypotheses are finished or at `max_new_tokens`; returns up to `beams` hypotheses, finished or
/// not, best score first. Ties go to the earlier hypothesis, then the lower token, so one beam
/// is exactly [`greedy`].
pub fn beam_search(
    model: &mut dyn NextTokenLogits,
    prompt: &[u32],
    beams: usize,
    length_penalty: f64,
    cfg: &GenerateConfig,
) -> Result<Vec<Hypothesis>> {
    if beams == 0 {
        return Err(invalid("beam search needs at least one beam".into()));
    }
    let score = |tokens: &[u32], lp: f64| lp / (tokens.len().max(1) as f64).powf(length_penalty);
    let mut live: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0)];
    let mut finished: Vec<Hypothesis> = Vec::new();
    let mut done = false;
    for _ in 0..cfg.max_new_tokens {
        let prefixes: Vec<Vec<u32>> = live
            .iter()
            .map(|(t, _)| [prompt, t.as_slice()].concat())
            .collect();
        let logits = logits_of(model, &prefixes)?;
        let mut candidates: Vec<(f64, usize, u32)> = Vec::new();
        for (i, l) in logits.iter().enumerate() {
            for (t, lp) in log_softmax(l).into_iter().enumerate() {
                candidates.push((live[i].1 + lp, i, t as u32));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut next = Vec::with_capacity(beams);
        for (rank, &(lp, i, t)) in candidates.iter().enumerate() {
            let mut tokens = live[i].0.clone();
            tokens.push(t);
            if cfg.eos == Some(t) {
                if rank < beams {
                    finished.push(Hypothesis {
                        score: score(&tokens, lp),
                        tokens,
                        log_prob: lp,
                    });
                }
                continue;
            }
            next.push((tokens, lp));
            if next.len() == beams {
                break;
            }
        }
        live = next;
        if finished.len() >= beams || live.is_empty() {
            done = true;
            break;
        }
    }
    let mut all = finished;
    // Hypotheses still running at the length limit count as finished there (as Hugging Face's
    // beam scorer finalises them); when enough ended with the end token, they do not.
    if !done {
        all.extend(
            live.into_iter()
                .filter(|(t, _)| !t.is_empty())
                .map(|(tokens, lp)| Hypothesis {
                    score: score(&tokens, lp),
                    tokens,
                    log_prob: lp,
                }),
        );
    }
    // Stable: equal scores keep finishing order.
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    all.truncate(beams);
    Ok(all)
}

/// The distribution [`sample`] draws the next token from: softmax of `logits / temperature`,
/// restricted to the `top_k` most likely tokens (those tied with the k-th kept too), then to the
/// smallest most-likely set whose probability reaches `top_p` (at least one token), renormalised.
pub fn sampling_distribution(logits: &[f32], s: &SamplingConfig) -> Result<Vec<f64>> {
    if !(s.temperature.is_finite() && s.temperature > 0.0) {
        return Err(invalid(format!("temperature {} is not > 0", s.temperature)));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(invalid(format!("top_p {} is not in (0, 1]", s.top_p)));
    }
    let scaled: Vec<f32> = logits.iter().map(|l| l / s.temperature).collect();
    let mut p: Vec<f64> = log_softmax(&scaled).into_iter().map(f64::exp).collect();
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    if s.top_k > 0 && s.top_k < p.len() {
        let kth = p[order[s.top_k - 1]];
        for &i in &order[s.top_k..] {
            if p[i] < kth {
                p[i] = 0.0;
            }
        }
    }
    if s.top_p < 1.0 {
        let total: f64 = p.iter().sum();
        let mut cumulative = 0.0;
        let mut kept = 0;
        for &i in &order {
            if kept > 0 && cumulative >= s.top_p as f64 * total {
                p[i] = 0.0;
            } else if p[i] > 0.0 {
                cumulative += p[i];
                kept += 1;
            }
        }
    }
    let total: f64 = p.iter().sum();
    Ok(p.into_iter().map(|x| x / total).collect())
}

/// Draws each token from [`sampling_distribution`]; seeded by `rng`.
pub fn sample(
    model: &mut dyn NextTokenLogits,
    prompt: &[u32],
    s: &SamplingConfig,
    cfg: &GenerateConfig,
    rng: &mut Rng,
) -> Result<Vec<u32>> {
    let mut seq = prompt.to_vec();
    for _ in 0..cfg.max_new_tokens {
        let logits = logits_of(model, std::slice::from_ref(&seq))?;
        let p = sampling_distribution(&logits[0], s)?;
        let mut target = rng.unit() as f64;
        let mut t = p.iter().rposition(|&x| x > 0.0).unwrap_or(0);
        for (i, x) in p.iter().enumerate() {
            if target < *x {
                t = i;
                break;
            }
            target -= x;
        }
        seq.push(t as u32);
        if cfg.eos == Some(t as u32) {
            break;
        }
    }
    Ok(seq[prompt.len()..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits from a table indexed by the last two tokens (a trigram model), counting calls.
    struct Table {
        vocab: usize,
        calls: usize,
        f: fn(u32, u32, usize) -> f32,
    }

    impl NextTokenLogits for Table {
        fn vocab_size(&self) -> usize {
            self.vocab
        }
        fn next_logits(&mut self, prefixes: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
            self.calls += 1;
            Ok(prefixes
                .iter()
                .map(|p| {
                    let a = p.len().checked_sub(2).map_or(0, |i| p[i]);
                    let b = *p.last().unwrap_or(&0);
                    (0..self.vocab).map(|t| (self.f)(a, b, t)).collect()
                })
                .collect())
        }
    }

    fn pseudo(a: u32, b: u32, t: usize) -> f32 {
        // Deterministic, irregular logits.
        let x = (a as usize * 31 + b as usize * 17 + t * 7 + 3) % 23;
        x as f32 / 4.0
    }

    fn table(vocab: usize) -> Table {
        Table {
            vocab,
            calls: 0,
            f: pseudo,
        }
    }

    #[test]
    fn greedy_follows_the_argmax_and_stops_at_the_end_token() {
        let mut m = table(5);
        let out = greedy(
            &mut m,
            &[1],
            &GenerateConfig {
                max_new_tokens: 6,
                eos: None,
            },
        )
        .unwrap();
        let mut seq = vec![1u32];
        for _ in 0..6 {
            let l = m.next_logits(std::slice::from_ref(&seq)).unwrap().remove(0);
            seq.push(argmax(&l) as u32);
        }
        assert_eq!(out, seq[1..]);
        let eos = out[2];
        let stopped = greedy(
            &mut m,
            &[1],
            &GenerateConfig {
                max_new_tokens: 6,
                eos: Some(eos),
            },
        )
        .unwrap();
        let first = out.iter().position(|&t| t == eos).unwrap();
        assert_eq!(stopped, out[..=first]);
    }

    #[test]
    fn one_beam_is_greedy_and_enough_beams_are_exhaustive() {
        for vocab in [3usize, 4] {
            let cfg = GenerateConfig {
                max_new_tokens: 3,
                eos: None,
            };
            let g = greedy(&mut table(vocab), &[2], &cfg).unwrap();
            let b = beam_search(&mut table(vocab), &[2], 1, 1.0, &cfg).unwrap();
            assert_eq!(b[0].tokens, g);
            // Every sequence of 3 tokens, scored by brute force.
            let mut m = table(vocab);
            let mut best = (f64::NEG_INFINITY, vec![]);
            for code in 0..vocab.pow(3) {
                let toks: Vec<u32> = (0..3)
                    .map(|i| ((code / vocab.pow(i)) % vocab) as u32)
                    .collect();
                let mut lp = 0.0;
                for k in 0..3 {
                    let prefix = [&[2u32][..], &toks[..k]].concat();
                    let l = m.next_logits(&[prefix]).unwrap().remove(0);
                    lp += log_softmax(&l)[toks[k] as usize];
                }
                if lp > best.0 + 1e-12 {
                    best = (lp, toks);
                }
            }
            let wide = beam_search(&mut table(vocab), &[2], vocab * vocab, 0.0, &cfg).unwrap();
            assert_eq!(wide[0].tokens, best.1, "vocab {vocab}");
            assert!((wide[0].log_prob - best.0).abs() < 1e-9);
            assert!(wide.windows(2).all(|w| w[0].score >= w[1].score));
            // Greedy is not always optimal here, and beams never do worse than it.
            assert!(wide[0].log_prob >= b[0].log_prob - 1e-12);
        }
    }

    #[test]
    fn finished_hypotheses_end_with_the_end_token() {
        let cfg = GenerateConfig {
            max_new_tokens: 8,
            eos: Some(0),
        };
        let hyps = beam_search(&mut table(4), &[1], 3, 1.0, &cfg).unwrap();
        assert!(!hyps.is_empty() && hyps.len() <= 3);
        for h in &hyps {
            let ends = h.tokens.last() == Some(&0);
            assert!(ends || h.tokens.len() == 8, "{h:?}");
            assert!(
                h.tokens[..h.tokens.len() - 1].iter().all(|&t| t != 0),
                "{h:?}"
            );
            assert!((h.score - h.log_prob / (h.tokens.len() as f64)).abs() < 1e-12);
        }
    }

    #[test]
    fn sampling_warpers_match_hand_computations() {
        let logits: Vec<f32> = [0.5f64, 0.3, 0.15, 0.05]
            .iter()
            .map(|p| p.ln() as f32)
            .collect();
        let d = |s: SamplingConfig| sampling_distribution(&logits, &s).unwrap();
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(
            &d(SamplingConfig::default()),
            &[0.5, 0.3, 0.15, 0.05]
        ));
        assert!(close(
            &d(SamplingConfig {
                top_p: 0.75,
                ..Default::default()
            }),
            &[0.625, 0.375, 0.0, 0.0]
        ));
        assert!(close(
            &d(SamplingConfig {
                top_p: 0.85,
                ..Default::default()
            }),
            &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]
        ));
        assert!(close(
            &d(SamplingConfig {
                top_k: 3,
                ..Default::default()
            }),
            &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]
        ));
        assert!(close(
            &d(SamplingConfig {
                top_k: 1,
                top_p: 0.01,
                ..Default::default()
            }),
            &[1.0, 0.0, 0.0, 0.0]
        ));
        // Temperature 2 takes square roots before normalising.
        let t = d(SamplingConfig {
            temperature: 2.0,
            ..Default::default()
        });
        let roots: Vec<f64> = [0.5f64, 0.3, 0.15, 0.05].iter().map(|p| p.sqrt()).collect();
        let z: f64 = roots.iter().sum();
        assert!(close(&t, &roots.iter().map(|r| r / z).collect::<Vec<_>>()));
        for bad in [
            SamplingConfig {
                temperature: 0.0,
                ..Default::default()
            },
            SamplingConfig {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingConfig {
                top_p: 1.5,
                ..Default::default()
            },
        ] {
            assert!(sampling_distribution(&logits, &bad).is_err());
        }
    }

    #[test]
    fn samples_follow_the_distribution_and_the_seed() {
        let mut m = Table {
            vocab: 4,
            calls: 0,
            f: |_, _, t| [0.5f32, 0.3, 0.15, 0.05][t].ln(),
        };
        let s = SamplingConfig {
            top_p: 0.9,
            ..Default::default()
        };
        let cfg = GenerateConfig {
            max_new_tokens: 1,
            eos: None,
        };
        let mut rng = Rng::new(7);
        let mut counts = [0usize; 4];
        let n = 20_000;
        for _ in 0..n {
            counts[sample(&mut m, &[0], &s, &cfg, &mut rng).unwrap()[0] as usize] += 1;
        }
        let want = [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0];
        for (c, w) in counts.iter().zip(want) {
            assert!((*c as f64 / n as f64 - w).abs() < 0.015, "{counts:?}");
        }
        let cfg = GenerateConfig {
            max_new_tokens: 5,
            eos: None,
        };
        let a = sample(
            &mut table(6),
            &[1],
            &SamplingConfig::default(),
            &cfg,
            &mut Rng::new(3),
        )
        .unwrap();
        let b = sample(
            &mut table(6),
            &[1],
            &SamplingConfig::default(),
            &cfg,
            &mut Rng::new(3),
        )
        .unwrap();
        assert_eq!(a, b);
        // top_k 1 is greedy.
        let k1 = SamplingConfig {
            top_k: 1,
            ..Default::default()
        };
        assert_eq!(
            sample(&mut table(6), &[1], &k1, &cfg, &mut Rng::new(9)).unwrap(),
            greedy(&mut table(6), &[1], &cfg).unwrap()
        );
    }

    #[test]
    fn a_model_returning_the_wrong_shape_is_an_error() {
        struct Short;
        impl NextTokenLogits for Short {
            fn vocab_size(&self) -> usize {
                5
            }
            fn next_logits(&mut self, p: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
                Ok(p.iter().map(|_| vec![0.0; 4]).collect())
            }
        }
        let cfg = GenerateConfig {
            max_new_tokens: 2,
            eos: None,
        };
        let e = greedy(&mut Short, &[1], &cfg).unwrap_err().to_string();
        assert!(e.contains("4 logits for a vocabulary of 5"), "{e}");
        assert!(beam_search(&mut table(3), &[1], 0, 1.0, &cfg).is_err());
    }
}
