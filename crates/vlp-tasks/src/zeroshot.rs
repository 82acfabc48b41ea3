//! Zero-shot classification with prompt ensembles (CLIP's ImageNet protocol).

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use vlp_align::ClipModel;
use vlp_text::Tokenizer;

use crate::embed::{Features, embed_texts};
use crate::error::{Result, TaskError};
use crate::scoring::{Direction, DotScorer, Scorer, block_rows};

/// Builds the classifier: for each class, the normalised mean of the normalised embeddings of
/// its name in every template, renormalised (CLIP's `zeroshot_classifier`).
///
/// Returns `[classes, dim]`.
pub fn classifier<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    classes: &[String],
    templates: &[String],
    device: &B::Device,
) -> Result<Features> {
    if classes.is_empty() || templates.is_empty() {
        return Err(TaskError::Invalid {
            task: "zero-shot".into(),
            reason: "need at least one class and one template".into(),
        });
    }
    if let Some(t) = templates.iter().find(|t| !t.contains("{}")) {
        return Err(TaskError::Invalid {
            task: "zero-shot".into(),
            reason: format!("template \"{t}\" has no {{}} for the class name"),
        });
    }
    let mut out = Features::default();
    for c in classes {
        let prompts: Vec<String> = templates.iter().map(|t| t.replace("{}", c)).collect();
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let e = embed_texts(model, tokenizer, &refs, 256, device)?;
        let mut mean = vec![0.0f32; e.dim];
        for i in 0..e.rows {
            for (m, v) in mean.iter_mut().zip(e.row(i)) {
                *m += v / e.rows as f32;
            }
        }
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        out.extend(Features {
            data: mean.iter().map(|v| v / norm).collect(),
            rows: 1,
            dim: e.dim,
        });
    }
    Ok(out)
}

/// Zero-shot results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotResult {
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy (top-k with k = min(5, classes)).
    pub top5: f64,
    /// Accuracy per class (NaN-free: classes without images get `None`).
    pub per_class: Vec<Option<f64>>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Images evaluated.
    pub count: usize,
}

/// Scores `images` against `classifier` (one normalised row per class) and compares with
/// `labels`.
///
/// Ties are broken towards the lower class index, so results are deterministic.
pub fn evaluate(
    images: &Features,
    labels: &[usize],
    classifier: &Features,
) -> Result<ZeroShotResult> {
    evaluate_scored(&DotScorer::new(images, classifier)?, labels, 1)
}

/// Zero-shot under any [`Scorer`] whose texts are `per_class` prompts for each class, class
/// after class; a class scores the mean of its prompts' image→text scores (how a method without
/// a pooled text embedding, such as FILIP, ensembles prompts).
///
/// Ties are broken towards the lower class index, so results are deterministic.
pub fn evaluate_scored(
    scorer: &dyn Scorer,
    labels: &[usize],
    per_class: usize,
) -> Result<ZeroShotResult> {
    let bad = |reason: String| TaskError::Invalid {
        task: "zero-shot".into(),
        reason,
    };
    let n = scorer.num_images();
    if per_class == 0 || !scorer.num_texts().is_multiple_of(per_class) {
        return Err(bad(format!(
            "{} prompts do not divide into {per_class} per class",
            scorer.num_texts()
        )));
    }
    let c = scorer.num_texts() / per_class;
    if n != labels.len() {
        return Err(bad(format!("{n} images but {} labels", labels.len())));
    }
    if n == 0 {
        return Err(bad("no images".into()));
    }
    if let Some(l) = labels.iter().find(|&&l| l >= c) {
        return Err(bad(format!("label {l} but only {c} classes")));
    }
    let mut confusion = vec![vec![0usize; c]; c];
    let (mut top1, mut top5) = (0usize, 0usize);
    let t = scorer.num_texts();
    let step = block_rows(t);
    for i0 in (0..n).step_by(step) {
        let rows = i0..(i0 + step).min(n);
        let block = scorer.scores(rows.clone(), 0..t, Direction::ImageToText)?;
        for (r, i) in rows.enumerate() {
            let row = &block[r * t..(r + 1) * t];
            let scores: Vec<f32> = (0..c)
                .map(|k| {
                    row[k * per_class..(k + 1) * per_class].iter().sum::<f32>() / per_class as f32
                })
                .collect();
            let label = labels[i];
            let mut order: Vec<usize> = (0..c).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            confusion[label][order[0]] += 1;
            top1 += usize::from(order[0] == label);
            top5 += usize::from(order.iter().take(5).any(|&k| k == label));
        }
    }
    let count = n as f64;
    let per_class_acc = (0..c)
        .map(|k| {
            let total: usize = confusion[k].iter().sum();
            (total > 0).then(|| confusion[k][k] as f64 / total as f64)
        })
        .collect();
    Ok(ZeroShotResult {
        top1: top1 as f64 / count,
        top5: top5 as f64 / count,
        per_class: per_class_acc,
        confusion,
        count: n,
    })
}

/// Zero-shot accuracy of `model` on pre-computed image features.
pub fn zero_shot<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    images: &Features,
    labels: &[usize],
    classes: &[String],
    templates: &[String],
    device: &B::Device,
) -> Result<ZeroShotResult> {
    evaluate(
        images,
        labels,
        &classifier(model, tokenizer, classes, templates, device)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(rows: &[&[f32]]) -> Features {
        Features {
            data: rows.iter().flat_map(|r| r.iter().copied()).collect(),
            rows: rows.len(),
            dim: rows[0].len(),
        }
    }

    #[test]
    fn accuracy_confusion_and_ties() {
        let classifier = feats(&[&[1.0, 0.0], &[0.0, 1.0], &[-0.6, 0.8]]);
        // image 0 → class 0; image 1 → class 1 (0.9 > 0.5 > 0.42); image 2 ties classes 0 and 1
        // at 0.5 and the tie goes to the lower index.
        let images = feats(&[&[1.0, 0.0], &[0.5, 0.9], &[0.5, 0.5]]);
        let r = evaluate(&images, &[0, 1, 1], &classifier).unwrap();
        assert_eq!(
            r.confusion,
            vec![vec![1, 0, 0], vec![1, 1, 0], vec![0, 0, 0]]
        );
        assert!((r.top1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.top5, 1.0);
        assert_eq!(r.per_class, vec![Some(1.0), Some(0.5), None]);
        assert!(evaluate(&images, &[0, 5, 1], &classifier).is_err());
    }
}
