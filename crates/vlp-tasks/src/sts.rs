//! Sentence similarity (STS): Spearman correlation between a model's cosine similarities and
//! graded gold scores, on a synthetic benchmark built from ShapesWorld's sentence grammar, and
//! the typo-robustness check of Pixel-Linguist (cos(s, typo(s)) > cos(s, another sentence)).
//!
//! The benchmark's grades (SentEval's STS-B scale is 0–5; four levels suffice here):
//! 3 = the same statement written another way, 2 = one attribute or the relation changed,
//! 1 = two changes, 0 = an unrelated statement. The writing style of each side is drawn
//! independently, so a pair that shares most pixels or words can still be graded low.

use vlp_data::shapes::{Rng, STYLES, Statement};
use vlp_data::text::typo;

use crate::error::{Result, TaskError};

/// Two sentences and how similar they are meant to be.
#[derive(Debug, Clone, PartialEq)]
pub struct StsPair {
    /// First sentence.
    pub a: String,
    /// Second sentence.
    pub b: String,
    /// Gold similarity (0 unrelated … 3 same meaning).
    pub score: f64,
}

/// `n` graded pairs from ShapesWorld's grammar, the four grades in equal shares, seeded.
pub fn shapes_sts(n: usize, seed: u64) -> Vec<StsPair> {
    let mut rng = Rng::new(seed ^ 0x5354_5300);
    (0..n)
        .map(|i| {
            let s = Statement::random(&mut rng);
            let grade = i % 4;
            let style_a = rng.below(STYLES);
            let (other, style_b) = match grade {
                3 => (s, (style_a + 1 + rng.below(STYLES - 1)) % STYLES),
                2 => (s.contradict(&mut rng), rng.below(STYLES)),
                1 => {
                    let once = s.contradict(&mut rng);
                    let mut twice = once.contradict(&mut rng);
                    while twice == s || twice == once {
                        twice = once.contradict(&mut rng);
                    }
                    (twice, rng.below(STYLES))
                }
                _ => {
                    let mut o = Statement::random(&mut rng);
                    while o.subject == s.subject {
                        o = Statement::random(&mut rng);
                    }
                    (o, rng.below(STYLES))
                }
            };
            StsPair {
                a: s.write(style_a),
                b: other.write(style_b),
                score: grade as f64,
            }
        })
        .collect()
}

/// `n` sentences from ShapesWorld's grammar, in random styles, seeded.
pub fn shapes_sentences(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0x5345_4e54);
    (0..n)
        .map(|_| {
            let s = Statement::random(&mut rng);
            s.write(rng.below(STYLES))
        })
        .collect()
}

fn invalid(task: &str, reason: String) -> TaskError {
    TaskError::Invalid {
        task: task.into(),
        reason,
    }
}

/// Ranks of `x` from 1, ties sharing their average rank.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in &order[i..=j] {
            r[*k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson correlation of the ranks, ties averaged, as SciPy's
/// `spearmanr`); an error when the lengths differ, there are fewer than two values or either
/// side is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return Err(invalid(
            "spearman",
            format!(
                "{} and {} values (need two equal lengths of at least 2)",
                x.len(),
                y.len()
            ),
        ));
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return Err(invalid(
            "spearman",
            "one side is constant (no ranking)".into(),
        ));
    }
    Ok(sxy / (sxx * syy).sqrt())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// Embeds `texts` and checks one vector per text, all of one width.
fn embed_checked<F>(texts: &[String], embed: &mut F) -> Result<Vec<Vec<f32>>>
where
    F: FnMut(&[String]) -> Result<Vec<Vec<f32>>>,
{
    let out = embed(texts)?;
    if out.len() != texts.len() || out.iter().any(|v| v.len() != out[0].len()) {
        return Err(invalid(
            "sts",
            format!(
                "the encoder returned {} embeddings for {} texts (or of differing widths)",
                out.len(),
                texts.len()
            ),
        ));
    }
    Ok(out)
}

/// Spearman correlation between the cosine similarity of each pair's embeddings and its gold
/// score.
pub fn sts_spearman<F>(pairs: &[StsPair], mut embed: F) -> Result<f64>
where
    F: FnMut(&[String]) -> Result<Vec<Vec<f32>>>,
{
    let a: Vec<String> = pairs.iter().map(|p| p.a.clone()).collect();
    let b: Vec<String> = pairs.iter().map(|p| p.b.clone()).collect();
    let (ea, eb) = (
        embed_checked(&a, &mut embed)?,
        embed_checked(&b, &mut embed)?,
    );
    let sims: Vec<f64> = ea.iter().zip(&eb).map(|(x, y)| cosine(x, y)).collect();
    let gold: Vec<f64> = pairs.iter().map(|p| p.score).collect();
    spearman(&sims, &gold)
}

/// The share of `sentences` closer (by cosine) to a typo of themselves (`edits` character
/// edits) than to another sentence of the list drawn at random with a different text; ties
/// count as failures.
pub fn typo_robustness<F>(
    sentences: &[String],
    edits: usize,
    seed: u64,
    mut embed: F,
) -> Result<f64>
where
    F: FnMut(&[String]) -> Result<Vec<Vec<f32>>>,
{
    let mut rng = Rng::new(seed ^ 0x5459_504f);
    let typos: Vec<String> = sentences.iter().map(|s| typo(s, edits, &mut rng)).collect();
    let others: Vec<usize> = (0..sentences.len())
        .map(|i| {
            let candidates: Vec<usize> = (0..sentences.len())
                .filter(|&j| sentences[j] != sentences[i])
                .collect();
            if candidates.is_empty() {
                Err(invalid(
                    "typo robustness",
                    "needs at least two different sentences".into(),
                ))
            } else {
                Ok(*rng.pick(&candidates))
            }
        })
        .collect::<Result<_>>()?;
    let (es, et) = (
        embed_checked(sentences, &mut embed)?,
        embed_checked(&typos, &mut embed)?,
    );
    let wins = (0..sentences.len())
        .filter(|&i| cosine(&es[i], &et[i]) > cosine(&es[i], &es[others[i]]))
        .count();
    Ok(wins as f64 / sentences.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_the_closed_form_and_averages_ties() {
        // No ties: 1 − 6 Σd² / (n (n² − 1)).
        let x = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0];
        let y = [2.0, 7.0, 1.0, 8.0, 2.5, 8.5, 3.0];
        let (rx, ry) = (ranks(&x), ranks(&y));
        let d2: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - b).powi(2)).sum();
        let n = 7.0;
        let want = 1.0 - 6.0 * d2 / (n * (n * n - 1.0));
        assert!((spearman(&x, &y).unwrap() - want).abs() < 1e-12);
        assert_eq!(
            ranks(&x),
            vec![4.0, 1.0, 5.0, 2.0, 6.0, 7.0, 3.0] as Vec<f64>
        );
        // Ties: ranks [1.5, 1.5, 3, 4] against [1, 2, 3, 4], Pearson by hand = 0.9486833.
        let r = spearman(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((r - 0.948_683_298_050_513_8).abs() < 1e-12, "{r}");
        assert!((spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]).unwrap() + 1.0).abs() < 1e-12);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_err());
        assert!(spearman(&[1.0], &[1.0]).is_err());
        assert!(spearman(&[1.0, 2.0], &[1.0]).is_err());
    }

    #[test]
    fn the_benchmark_is_seeded_and_graded() {
        let p = shapes_sts(400, 1);
        assert_eq!(p, shapes_sts(400, 1));
        assert_ne!(p, shapes_sts(400, 2));
        for g in 0..4 {
            assert_eq!(p.iter().filter(|x| x.score == g as f64).count(), 100);
        }
        // Same meaning, other words; changed ones read as different statements.
        for x in &p {
            assert_ne!(x.a, x.b);
            if x.score == 3.0 {
                let (a, b) = (Statement::parse(&x.a), Statement::parse(&x.b));
                if let (Some(a), Some(b)) = (a, b)
                    && a.relation.is_none()
                {
                    assert_eq!(a, b);
                }
            }
        }
    }

    /// A bag-of-letters "encoder": typos barely move it, other sentences do.
    fn letters(texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; 26];
                for c in t.to_lowercase().bytes().filter(u8::is_ascii_lowercase) {
                    v[(c - b'a') as usize] += 1.0;
                }
                v
            })
            .collect())
    }

    #[test]
    fn scores_come_from_the_encoder_and_bad_encoders_are_errors() {
        let s = shapes_sentences(200, 4);
        let rate = typo_robustness(&s, 1, 0, letters).unwrap();
        assert!(rate > 0.8, "{rate}");
        // A constant encoder never prefers the typo.
        let constant = |t: &[String]| Ok(vec![vec![1.0f32, 2.0]; t.len()]);
        assert_eq!(typo_robustness(&s, 1, 0, constant).unwrap(), 0.0);
        let short = |t: &[String]| Ok(vec![vec![1.0f32]; t.len() - 1]);
        assert!(typo_robustness(&s, 1, 0, short).is_err());
        let same = vec!["a red circle".to_string(); 3];
        assert!(typo_robustness(&same, 1, 0, letters).is_err());
        let pairs = shapes_sts(200, 5);
        let rho = sts_spearman(&pairs, letters).unwrap();
        // Letters see that grade-3 pairs share their words, so the correlation is positive.
        assert!(rho > 0.2, "{rho}");
        assert!(sts_spearman(&pairs, constant).is_err());
    }
}
