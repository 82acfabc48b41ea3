//! The cross-domain protocol (domain generalisation, as CoOp's and the survey's tables report
//! it): methods learn from shots of a source domain and are tested on the source and on shifted
//! target domains (ShapesWorld's palette, background, placement and texture axes, or any other
//! labelled sets of the same classes). Each row carries the survey's domain-gap proxy: the
//! squared MMD between the source's and the domain's test features.

use serde::{Deserialize, Serialize};

use super::{Family, FewShotContext, FewShotMethod, k_shot_indices, rows};
use crate::embed::Features;
use crate::error::{Result, TaskError};
use crate::probe::accuracy;

/// Rows of each side the MMD is computed on (the first ones; the estimator is quadratic).
pub const MMD_ROWS: usize = 500;

/// A labelled test set of one domain.
pub struct Domain<'a> {
    /// Name in reports (`source`, `pastel`, …).
    pub name: String,
    /// Frozen features of its test images.
    pub features: &'a Features,
    /// Their labels, in the source's label space.
    pub labels: &'a [usize],
}

/// One method at one k on one domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossDomainRow {
    /// Method name.
    pub method: String,
    /// Shots per class (from the source domain).
    pub k: usize,
    /// The test domain.
    pub domain: String,
    /// Mean test accuracy over seeds.
    pub mean: f64,
    /// Standard deviation over seeds.
    pub std: f64,
    /// Accuracy of each seed.
    pub accuracies: Vec<f64>,
    /// Squared MMD (Gaussian kernel, median bandwidth) between the source domain's test
    /// features and this domain's: the domain-gap proxy (about 0 for the source itself).
    pub mmd2: f64,
    /// Parameters the method trains.
    pub trainable_params: usize,
    /// Labelled images it learned from (the first seed's draw).
    pub samples: usize,
    /// The method's family.
    pub family: Family,
}

fn head(f: &Features) -> &[f32] {
    &f.data[..f.rows.min(MMD_ROWS) * f.dim]
}

/// Runs every method at every k with every seed: shots from `train` (the source domain), each
/// fitted method scored on every domain's test set. `domains[0]` is the source domain's test
/// set (its gap is measured against itself, split in halves).
#[allow(clippy::too_many_arguments)]
pub fn cross_domain(
    methods: &[&dyn FewShotMethod],
    train: &Features,
    train_labels: &[usize],
    domains: &[Domain],
    ctx: &FewShotContext,
    ks: &[usize],
    seeds: &[u64],
) -> Result<Vec<CrossDomainRow>> {
    let bad = |reason: String| TaskError::Invalid {
        task: "cross-domain".into(),
        reason,
    };
    if seeds.is_empty() || ks.is_empty() || domains.is_empty() {
        return Err(bad("need at least one k, one seed and one domain".into()));
    }
    for d in domains {
        if d.features.rows != d.labels.len() || d.features.rows < 4 {
            return Err(bad(format!(
                "domain {}: {} test images for {} labels (need at least 4)",
                d.name,
                d.features.rows,
                d.labels.len()
            )));
        }
        if d.features.dim != train.dim {
            return Err(bad(format!(
                "domain {}: features {} wide, the training features {}",
                d.name, d.features.dim, train.dim
            )));
        }
        if let Some(l) = d.labels.iter().find(|&&l| l >= ctx.classes) {
            return Err(bad(format!(
                "domain {}: label {l} but {} classes",
                d.name, ctx.classes
            )));
        }
    }
    let source = domains[0].features;
    let mmd: Vec<f64> = domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i == 0 {
                // The source against itself: its two halves (an estimate of the floor).
                let half = source.rows.min(2 * MMD_ROWS) / 2;
                let (a, b) = source.data[..2 * half * source.dim].split_at(half * source.dim);
                vlp_core::distance::mmd2_rbf(a, b, source.dim, None)
            } else {
                vlp_core::distance::mmd2_rbf(head(source), head(d.features), source.dim, None)
            }
        })
        .collect();
    // Every domain's test rows at once: each method fits once per (k, seed).
    let mut all = Features::default();
    for d in domains {
        all.extend(d.features.clone());
    }
    let mut out = Vec::new();
    for &k in ks {
        for m in methods {
            let mut accs = vec![Vec::new(); domains.len()];
            let mut samples = None;
            for &seed in seeds {
                let idx = k_shot_indices(train_labels, ctx.classes, k, seed);
                samples.get_or_insert(idx.len());
                let shots = rows(train, &idx);
                let labels: Vec<usize> = idx.iter().map(|&i| train_labels[i]).collect();
                let pred = m.predict(&shots, &labels, ctx, &all)?;
                if pred.len() != all.rows {
                    return Err(bad(format!(
                        "{} predicted {} rows for {}",
                        m.name(),
                        pred.len(),
                        all.rows
                    )));
                }
                let mut start = 0;
                for (d, acc) in domains.iter().zip(accs.iter_mut()) {
                    let end = start + d.features.rows;
                    acc.push(accuracy(&pred[start..end], d.labels));
                    start = end;
                }
            }
            for ((d, a), &gap) in domains.iter().zip(accs).zip(&mmd) {
                let mean = a.iter().sum::<f64>() / a.len() as f64;
                let std =
                    (a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
                out.push(CrossDomainRow {
                    method: m.name(),
                    k,
                    domain: d.name.clone(),
                    mean,
                    std,
                    accuracies: a,
                    mmd2: gap,
                    trainable_params: m.trainable_params(train.dim, ctx.classes),
                    samples: samples.unwrap_or(0),
                    family: m.family(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fewshot::ZeroShot;

    /// Two classes on axes 0 and 1; a shifted domain adds an offset on axis 2 (a gap the MMD
    /// sees) and, in a third domain, swaps which axis each class lies on (zero-shot fails).
    #[test]
    fn every_domain_is_scored_with_its_gap() {
        let make = |n: usize, shift: f32, swap: bool| {
            let mut data = Vec::new();
            let mut labels = Vec::new();
            for i in 0..n {
                let c = i % 2;
                let axis = if swap { 1 - c } else { c };
                let mut row = [0.0f32; 3];
                row[axis] = 1.0 + 0.01 * (i % 5) as f32;
                row[2] = shift + 0.01 * (i % 3) as f32;
                data.extend(row);
                labels.push(c);
            }
            (
                Features {
                    data,
                    rows: n,
                    dim: 3,
                },
                labels,
            )
        };
        let (train, train_y) = make(20, 0.0, false);
        let (src, src_y) = make(40, 0.0, false);
        let (shifted, shifted_y) = make(30, 2.0, false);
        let (swapped, swapped_y) = make(30, 0.0, true);
        let zs = Features {
            data: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            rows: 2,
            dim: 3,
        };
        let ctx = FewShotContext {
            classes: 2,
            zero_shot: &zs,
        };
        let domains = [
            Domain {
                name: "source".into(),
                features: &src,
                labels: &src_y,
            },
            Domain {
                name: "shifted".into(),
                features: &shifted,
                labels: &shifted_y,
            },
            Domain {
                name: "swapped".into(),
                features: &swapped,
                labels: &swapped_y,
            },
        ];
        let rows = cross_domain(
            &[&ZeroShot],
            &train,
            &train_y,
            &domains,
            &ctx,
            &[1, 2],
            &[0, 1],
        )
        .unwrap();
        assert_eq!(rows.len(), 2 * 3);
        let acc: Vec<f64> = rows.iter().take(3).map(|r| r.mean).collect();
        assert_eq!(acc, vec![1.0, 1.0, 0.0]);
        let gap: Vec<f64> = rows.iter().take(3).map(|r| r.mmd2).collect();
        assert!(gap[0].abs() < 0.05, "source vs itself {gap:?}");
        assert!(gap[1] > 0.5, "a shift of 2 on one axis {gap:?}");
        assert_eq!((rows[3].k, rows[3].domain.as_str()), (2, "source"));
        assert_eq!((rows[0].samples, rows[3].samples), (2, 4));
        let err = cross_domain(
            &[&ZeroShot],
            &train,
            &train_y,
            &[Domain {
                name: "short".into(),
                features: &src,
                labels: &src_y[..3],
            }],
            &ctx,
            &[1],
            &[0],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("domain short: 40 test images for 3 labels"),
            "{err}"
        );
    }
}
