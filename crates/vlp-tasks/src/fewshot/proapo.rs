//! ProAPO (Qu et al., 2025, "Progressive Automatic Prompt Optimization"), its template stage: an
//! evolutionary search over *sets* of prompt templates (a set is a CLIP prompt ensemble) for the
//! one that classifies the training shots best, with a fitness that also penalises
//! over-confident mistakes, so that a handful of shots does not pick a set that merely fits them.
//!
//! Following the official code (`MorningStarOvO/ProAPO`, `tools/process/task_specific_selection.py`,
//! `tools/utils/util_model.py::get_fitness_score`, `tools/configs/option.py`):
//! - a memory scores every single template of the library; the library's first template is the
//!   baseline; the search starts from the best single templates;
//! - each epoch the `num_top` fittest sets are edited: `add` (2^j new templates, j drawn by
//!   operator weights), `remove` (2^j templates out, sets above 2), `replace` (one out, one in);
//!   templates are drawn with weight `fitness(template) − fitness(baseline) + ε`
//!   (`random_weighted_choice`: negative weights shifted, removal by the reversed weights); then
//!   `mutation` and `crossover` of top sets; a composition already scored is not scored again;
//! - the operator sizes' weights follow the fitness they produce, with momentum 0.9;
//! - fitness `a·top1 + b·top5 − c·CE` on the shots, accuracies in percent as the code computes
//!   them; methods.md's task-agnostic stage: a 0.5, b 0.05, c 10 (the code's defaults differ:
//!   0.1, 0.1, 10, plus a 0.05 redundancy term, which the run scripts do not change).
//!
//! The second, class-specific stage ([`search_descriptions`]) adds descriptions of each class
//! (from an LLM, or the offline source with its injected wrong ones) to the chosen templates'
//! ensemble: classes are ranked by their accuracy on the shots, split into groups of about
//! 2.5·ln C, and the worst `groups` groups are searched one after the other with the same
//! operators over their classes' descriptions, fitness `0.2·top5 − 10·CE`
//! (`tools/process/class_specific_selection.py`). Simplified: the code also mixes templates into
//! each description ("{template} {class}, which {description}"); here a description is one more
//! member of its class's ensemble.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use vlp_align::ClipModel;
use vlp_core::rng::Rng;
use vlp_text::Tokenizer;

use super::{Family, FewShotContext, FewShotMethod, scores};
use crate::embed::Features;
use crate::error::{Result, TaskError};
use crate::probe::argmax_rows;

/// The search's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProapoConfig {
    /// Search epochs (the code's 8).
    pub epochs: usize,
    /// Sets edited each epoch (the code's 4).
    pub num_top: usize,
    /// `add` candidates per top set (8).
    pub num_add: usize,
    /// `remove` candidates per top set (8).
    pub num_remove: usize,
    /// `replace` candidates per top set (8).
    pub num_replace: usize,
    /// Mutations per epoch (methods.md's 4).
    pub num_mutation: usize,
    /// Crossovers per epoch (16).
    pub num_crossover: usize,
    /// Momentum of the operator-size weights (0.9).
    pub momentum: f64,
    /// ε added to fitness gains in sampling weights (the code's `threshold_epsilon_linear`, 1).
    pub epsilon: f64,
    /// Weight of top-1 accuracy in percent (0.5).
    pub top1: f64,
    /// Weight of top-5 accuracy in percent (0.05).
    pub top5: f64,
    /// Weight of the cross-entropy on the shots (10).
    pub ce: f64,
    /// The description stage's fitness weights `[top-1, top-5, CE]` (methods.md: 0, 0.2, 10).
    pub description_weights: [f64; 3],
    /// Groups of hardest classes the description stage searches (the code's 4).
    pub groups: usize,
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for ProapoConfig {
    fn default() -> Self {
        Self {
            epochs: 8,
            num_top: 4,
            num_add: 8,
            num_remove: 8,
            num_replace: 8,
            num_mutation: 4,
            num_crossover: 16,
            momentum: 0.9,
            epsilon: 1.0,
            top1: 0.5,
            top5: 0.05,
            ce: 10.0,
            description_weights: [0.0, 0.2, 10.0],
            groups: 4,
            seed: 0,
        }
    }
}

/// The fitness of one set and what it is made of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fitness {
    /// Top-1 accuracy on the shots, percent.
    pub top1: f64,
    /// Top-5 accuracy, percent.
    pub top5: f64,
    /// Mean cross-entropy of `exp(logit_scale)·cos`.
    pub ce: f64,
    /// `a·top1 + b·top5 − c·ce`.
    pub score: f64,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProapoResult {
    /// The best set: indices into the library, increasing.
    pub best: Vec<usize>,
    /// Its fitness.
    pub fitness: Fitness,
    /// The baseline's (the library's first template alone).
    pub baseline: Fitness,
    /// The best fitness after initialisation and after each epoch (never decreasing).
    pub history: Vec<f64>,
    /// Sets scored.
    pub evaluated: usize,
}

/// Scores template sets on the shots: per-template class embeddings computed once.
pub struct TemplateScorer<'a> {
    /// `[templates][classes × dim]`: normalised embedding of each template filled with each class.
    pub per_template: &'a [Features],
    /// Normalised image features of the shots.
    pub shots: &'a Features,
    /// Their labels.
    pub labels: &'a [usize],
    /// `exp(logit_scale)` of the model.
    pub logit_scale: f64,
}

impl TemplateScorer<'_> {
    /// The classifier of a set: per class, the normalised mean of its templates' embeddings
    /// (CLIP's prompt ensembling), `[classes, dim]`.
    pub fn classifier(&self, set: &[usize]) -> Features {
        let first = &self.per_template[set[0]];
        let (c, d) = (first.rows, first.dim);
        let mut data = vec![0.0f32; c * d];
        for &t in set {
            for (m, v) in data.iter_mut().zip(&self.per_template[t].data) {
                *m += v;
            }
        }
        for row in data.chunks_mut(d) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= n);
        }
        Features {
            data,
            rows: c,
            dim: d,
        }
    }

    /// The fitness of `set` with weights `[top-1, top-5, CE]`.
    pub fn fitness(&self, set: &[usize], weights: [f64; 3]) -> Fitness {
        fitness_of(
            &self.classifier(set),
            self.shots,
            self.labels,
            self.logit_scale,
            weights,
        )
    }
}

/// `a·top1 + b·top5 − c·CE` (`weights` = `[a, b, c]`, accuracies in percent) of classifier `w`
/// on the shots.
pub fn fitness_of(
    w: &Features,
    shots: &Features,
    labels: &[usize],
    logit_scale: f64,
    weights: [f64; 3],
) -> Fitness {
    let n = shots.rows;
    let (mut top1, mut top5, mut ce) = (0usize, 0usize, 0.0f64);
    for (i, &y) in labels.iter().enumerate().take(n) {
        let x = shots.row(i);
        let logits: Vec<f64> = (0..w.rows)
            .map(|c| {
                logit_scale
                    * x.iter()
                        .zip(w.row(c))
                        .map(|(a, b)| f64::from(a * b))
                        .sum::<f64>()
            })
            .collect();
        let above = logits.iter().filter(|&&l| l > logits[y]).count();
        top1 += usize::from(above == 0);
        top5 += usize::from(above < 5);
        let m = logits.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        ce += lse - logits[y];
    }
    let (top1, top5, ce) = (
        100.0 * top1 as f64 / n as f64,
        100.0 * top5 as f64 / n as f64,
        ce / n as f64,
    );
    Fitness {
        top1,
        top5,
        ce,
        score: weights[0] * top1 + weights[1] * top5 - weights[2] * ce,
    }
}

/// `num` distinct items of `items` drawn with probability ∝ `weights` (shifted positive as the
/// code's `random_weighted_choice`; `reverse`: ∝ 1 − p).
fn weighted_choice(
    rng: &mut Rng,
    items: &[usize],
    weights: &[f64],
    num: usize,
    reverse: bool,
) -> Vec<usize> {
    let mut p: Vec<f64> = weights.iter().map(|w| w + 1e-4).collect();
    let min = p.iter().cloned().fold(f64::MAX, f64::min);
    if min < 0.0 {
        p.iter_mut().for_each(|v| *v = *v - min + 1e-4);
    }
    let sum: f64 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= sum);
    if reverse {
        p.iter_mut().for_each(|v| *v = 1.0 - *v + 1e-4);
        let s: f64 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= s);
    }
    // Positions into `items` still available, drawn one at a time without replacement.
    let (mut pool, mut out): (Vec<usize>, Vec<usize>) = ((0..items.len()).collect(), Vec::new());
    while out.len() < num && !pool.is_empty() {
        let total: f64 = pool.iter().map(|&j| p[j]).sum();
        let mut r = f64::from(rng.unit()) * total;
        let mut k = pool.len() - 1;
        for (n, &j) in pool.iter().enumerate() {
            r -= p[j];
            if r <= 0.0 {
                k = n;
                break;
            }
        }
        out.push(items[pool.remove(k)]);
    }
    out
}

/// An index drawn with probability ∝ `w` (all positive).
fn draw_size(rng: &mut Rng, w: &[f64]) -> usize {
    let total: f64 = w.iter().map(|v| v.max(1e-6)).sum();
    let mut r = f64::from(rng.unit()) * total;
    for (j, v) in w.iter().enumerate() {
        r -= v.max(1e-6);
        if r <= 0.0 {
            return j;
        }
    }
    w.len() - 1
}

/// The evolutionary search over sets of the `templates` library (scored by `scorer`, which
/// holds every template's class embeddings). Deterministic under `cfg.seed`.
pub fn search(scorer: &TemplateScorer, cfg: &ProapoConfig) -> Result<ProapoResult> {
    let t = scorer.per_template.len();
    if t == 0 || scorer.shots.rows == 0 || scorer.shots.rows != scorer.labels.len() {
        return Err(TaskError::Invalid {
            task: "proapo".into(),
            reason: format!(
                "{t} templates, {} shots for {} labels",
                scorer.shots.rows,
                scorer.labels.len()
            ),
        });
    }
    let weights = [cfg.top1, cfg.top5, cfg.ce];
    Ok(evolve(t, &[0], &|s| scorer.fitness(s, weights), cfg))
}

/// The evolutionary search over subsets of `n` items (templates, or a group's descriptions)
/// from the baseline set `start`, each set scored by `fitness`. Deterministic under
/// `cfg.seed`.
pub fn evolve(
    n: usize,
    start: &[usize],
    fitness: &dyn Fn(&[usize]) -> Fitness,
    cfg: &ProapoConfig,
) -> ProapoResult {
    let t = n;
    if t == 0 {
        // Nothing to search: the baseline is all there is.
        let baseline = fitness(start);
        return ProapoResult {
            best: start.to_vec(),
            fitness: baseline,
            baseline,
            history: vec![baseline.score; cfg.epochs + 1],
            evaluated: 0,
        };
    }
    let mut rng = Rng::new(cfg.seed);
    let single: Vec<Fitness> = (0..t).map(|i| fitness(&[i])).collect();
    let mut start = start.to_vec();
    start.sort_unstable();
    let baseline = fitness(&start);
    // Sampling weight of each template: its gain over the baseline, plus ε.
    let gain: Vec<f64> = single
        .iter()
        .map(|f| f.score - baseline.score + cfg.epsilon)
        .collect();
    // Every composition scored, by its sorted indices; the population is all of them.
    let mut scored: std::collections::BTreeMap<Vec<usize>, f64> = Default::default();
    let mut order: Vec<usize> = (0..t).collect();
    order.sort_by(|&a, &b| single[b].score.total_cmp(&single[a].score).then(a.cmp(&b)));
    for &i in order.iter().take(cfg.num_top.max(1)) {
        scored.insert(vec![i], single[i].score);
    }
    scored.insert(start.clone(), baseline.score);
    let max_j =
        ((t as f64).log2() as i64 - (cfg.epochs.max(1) as f64).log2() as i64).max(1) as usize;
    let mut size_w: [Vec<f64>; 3] = std::array::from_fn(|_| vec![cfg.epsilon; max_j]);
    let best_of = |s: &std::collections::BTreeMap<Vec<usize>, f64>| {
        s.iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(k, v)| (k.clone(), *v))
            .expect("not empty")
    };
    let mut history = vec![best_of(&scored).1];
    let mut evaluated = t;
    let try_insert = |set: Vec<usize>,
                      scored: &mut std::collections::BTreeMap<Vec<usize>, f64>,
                      evaluated: &mut usize|
     -> Option<f64> {
        let mut set = set;
        set.sort_unstable();
        set.dedup();
        if set.is_empty() || scored.contains_key(&set) {
            return None;
        }
        let f = fitness(&set).score;
        *evaluated += 1;
        scored.insert(set, f);
        Some(f)
    };
    for _ in 0..cfg.epochs {
        let mut ranked: Vec<(Vec<usize>, f64)> =
            scored.iter().map(|(k, v)| (k.clone(), *v)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<Vec<usize>> = ranked
            .into_iter()
            .take(cfg.num_top.max(1))
            .map(|(k, _)| k)
            .collect();
        for set in &top {
            let outside: Vec<usize> = (0..t).filter(|i| !set.contains(i)).collect();
            let w_out: Vec<f64> = outside.iter().map(|&i| gain[i]).collect();
            let w_in: Vec<f64> = set.iter().map(|&i| gain[i]).collect();
            // add
            let mut made = 0;
            for _ in 0..cfg.num_add + 64 {
                if made == cfg.num_add || outside.is_empty() {
                    break;
                }
                let j = draw_size(&mut rng, &size_w[0]);
                let k = 1usize << j;
                if k > outside.len() {
                    continue;
                }
                let mut s = set.clone();
                s.extend(weighted_choice(&mut rng, &outside, &w_out, k, false));
                if let Some(f) = try_insert(s, &mut scored, &mut evaluated) {
                    made += 1;
                    size_w[0][j] = size_w[0][j] * cfg.momentum
                        + (f + cfg.epsilon - baseline.score) * (1.0 - cfg.momentum);
                }
            }
            // remove
            if set.len() > 2 {
                let mut made = 0;
                for _ in 0..cfg.num_remove + 64 {
                    if made == cfg.num_remove {
                        break;
                    }
                    let j = draw_size(&mut rng, &size_w[1]);
                    let k = 1usize << j;
                    if k >= set.len() {
                        continue;
                    }
                    let gone = weighted_choice(&mut rng, set, &w_in, k, true);
                    let s: Vec<usize> = set.iter().copied().filter(|i| !gone.contains(i)).collect();
                    if let Some(f) = try_insert(s, &mut scored, &mut evaluated) {
                        made += 1;
                        size_w[1][j] = size_w[1][j] * cfg.momentum
                            + (f + cfg.epsilon - baseline.score) * (1.0 - cfg.momentum);
                    }
                }
            }
            // replace
            if !outside.is_empty() {
                let mut made = 0;
                for _ in 0..cfg.num_replace + 64 {
                    if made == cfg.num_replace {
                        break;
                    }
                    let j = draw_size(&mut rng, &size_w[2]);
                    let k = (1usize << j).min(set.len()).min(outside.len());
                    let gone = weighted_choice(&mut rng, set, &w_in, k, true);
                    let mut s: Vec<usize> =
                        set.iter().copied().filter(|i| !gone.contains(i)).collect();
                    s.extend(weighted_choice(&mut rng, &outside, &w_out, k, false));
                    if let Some(f) = try_insert(s, &mut scored, &mut evaluated) {
                        made += 1;
                        size_w[2][j] = size_w[2][j] * cfg.momentum
                            + (f + cfg.epsilon - baseline.score) * (1.0 - cfg.momentum);
                    }
                }
            }
        }
        // mutation: each template of a top set flips membership with probability 1/|library|
        // (at least one flip).
        let mut made = 0;
        for _ in 0..cfg.num_mutation + 64 {
            if made == cfg.num_mutation {
                break;
            }
            let parent = &top[rng.below(top.len())];
            let mut s = parent.clone();
            let flip = rng.below(t);
            if let Some(p) = s.iter().position(|&i| i == flip) {
                s.remove(p);
            } else {
                s.push(flip);
            }
            for i in 0..t {
                if rng.chance(1.0 / t as f32) {
                    if let Some(p) = s.iter().position(|&x| x == i) {
                        s.remove(p);
                    } else {
                        s.push(i);
                    }
                }
            }
            if try_insert(s, &mut scored, &mut evaluated).is_some() {
                made += 1;
            }
        }
        // crossover: every template of two top parents kept with probability 1/2.
        let mut made = 0;
        for _ in 0..cfg.num_crossover + 64 {
            if made == cfg.num_crossover || top.len() < 2 {
                break;
            }
            let a = rng.below(top.len());
            let b = (a + 1 + rng.below(top.len() - 1)) % top.len();
            let mut s: Vec<usize> = top[a]
                .iter()
                .chain(&top[b])
                .copied()
                .filter(|_| rng.chance(0.5))
                .collect();
            if s.is_empty() {
                // Both halves dropped everything: keep a first parent's item, if it has one
                // (the description stage's starting set is empty).
                match top[a].first() {
                    Some(&i) => s.push(i),
                    None => continue,
                }
            }
            if try_insert(s, &mut scored, &mut evaluated).is_some() {
                made += 1;
            }
        }
        history.push(best_of(&scored).1);
    }
    let (best, _) = best_of(&scored);
    ProapoResult {
        fitness: fitness(&best),
        best,
        baseline,
        history,
        evaluated,
    }
}

/// What the description stage chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DescriptionResult {
    /// Per class, the indices of its chosen descriptions (increasing; empty: templates only).
    pub chosen: Vec<Vec<usize>>,
    /// The groups searched, hardest first (class indices).
    pub groups: Vec<Vec<usize>>,
    /// Fitness of the final classifier (description weights).
    pub fitness: Fitness,
    /// Fitness of the templates alone (description weights).
    pub baseline: Fitness,
    /// The best fitness after initialisation and after each epoch of each group (never
    /// decreasing).
    pub history: Vec<f64>,
}

/// Each class's classifier row: the normalised sum of `base` (the chosen templates' embeddings,
/// summed) and its chosen descriptions' embeddings.
pub fn describe_classifier(
    base: &Features,
    descriptions: &[Features],
    chosen: &[Vec<usize>],
) -> Features {
    let d = base.dim;
    let mut data = base.data.clone();
    for (c, row) in data.chunks_mut(d).enumerate() {
        for &j in &chosen[c] {
            row.iter_mut()
                .zip(descriptions[c].row(j))
                .for_each(|(a, b)| *a += b);
        }
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    Features {
        data,
        rows: base.rows,
        dim: d,
    }
}

/// ProAPO's class-specific stage on top of `base` (`[classes, dim]`: the chosen templates'
/// class embeddings, summed, not normalised), with `descriptions[c]` the normalised embeddings
/// of class `c`'s candidate descriptions. Deterministic under `cfg.seed`.
pub fn search_descriptions(
    base: &Features,
    descriptions: &[Features],
    shots: &Features,
    labels: &[usize],
    logit_scale: f64,
    cfg: &ProapoConfig,
) -> Result<DescriptionResult> {
    let c = base.rows;
    if descriptions.len() != c || shots.rows != labels.len() || shots.rows == 0 {
        return Err(TaskError::Invalid {
            task: "proapo descriptions".into(),
            reason: format!(
                "{} description lists for {c} classes, {} shots for {} labels",
                descriptions.len(),
                shots.rows,
                labels.len()
            ),
        });
    }
    let w = cfg.description_weights;
    let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); c];
    let score = |chosen: &[Vec<usize>]| {
        fitness_of(
            &describe_classifier(base, descriptions, chosen),
            shots,
            labels,
            logit_scale,
            w,
        )
    };
    let baseline = score(&chosen);
    // The classes the shots find hardest first (those without shots cannot be judged).
    let start = describe_classifier(base, descriptions, &chosen);
    let mut acc: Vec<(f64, usize)> = Vec::new();
    for (k, desc) in descriptions.iter().enumerate() {
        let mine: Vec<usize> = (0..shots.rows).filter(|&i| labels[i] == k).collect();
        if mine.is_empty() || desc.rows == 0 {
            continue;
        }
        let right = mine
            .iter()
            .filter(|&&i| {
                let x = shots.row(i);
                let s = |r: usize| -> f32 { x.iter().zip(start.row(r)).map(|(a, b)| a * b).sum() };
                (0..c).all(|r| r == k || s(r) < s(k))
            })
            .count();
        acc.push((right as f64 / mine.len() as f64, k));
    }
    acc.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let size = ((2.5 * (c as f64).ln()).round() as usize).max(1);
    let groups: Vec<Vec<usize>> = acc
        .chunks(size)
        .take(cfg.groups)
        .map(|g| g.iter().map(|&(_, k)| k).collect())
        .collect();
    let mut history = vec![baseline.score];
    for group in &groups {
        // The group's items: (class, description) pairs.
        let items: Vec<(usize, usize)> = group
            .iter()
            .flat_map(|&k| (0..descriptions[k].rows).map(move |j| (k, j)))
            .collect();
        let current = chosen.clone();
        let with = |set: &[usize]| {
            let mut ch = current.clone();
            for &k in group {
                ch[k].clear();
            }
            for &i in set {
                let (k, j) = items[i];
                ch[k].push(j);
            }
            ch
        };
        let r = evolve(items.len(), &[], &|set| score(&with(set)), cfg);
        // Each group starts from the previous groups' choice (its own classes have none yet),
        // so its history continues the previous one.
        history.extend(r.history.iter().skip(1));
        chosen = with(&r.best);
        for v in &mut chosen {
            v.sort_unstable();
        }
    }
    Ok(DescriptionResult {
        fitness: score(&chosen),
        chosen,
        groups,
        baseline,
        history,
    })
}

/// ProAPO's template search as a k-shot method: searches the `templates` library on the shots,
/// then classifies with the best set's prompt ensemble. Nothing is trained (0 parameters): the
/// shots choose among prompts.
pub struct Proapo<'a, B: Backend> {
    /// The model.
    pub model: &'a ClipModel<B>,
    /// Its tokenizer.
    pub tokenizer: &'a dyn Tokenizer,
    /// Class names, in label order.
    pub classes: &'a [String],
    /// The library; the first is the baseline (e.g. "a photo of a {}.").
    pub templates: Vec<String>,
    /// Candidate descriptions of each class (full sentences, in class order) for the
    /// class-specific stage; `None`: the template stage only.
    pub descriptions: Option<Vec<Vec<String>>>,
    /// The search.
    pub config: ProapoConfig,
    /// Device.
    pub device: B::Device,
}

impl<B: Backend> Proapo<'_, B> {
    /// Every template's class embeddings, `[templates][classes × dim]`.
    pub fn per_template(&self) -> Result<Vec<Features>> {
        self.templates
            .iter()
            .map(|t| {
                crate::zeroshot::classifier(
                    self.model,
                    self.tokenizer,
                    self.classes,
                    std::slice::from_ref(t),
                    &self.device,
                )
            })
            .collect()
    }

    /// Runs the search on `shots` (seed: the config's).
    pub fn search(
        &self,
        shots: &Features,
        labels: &[usize],
    ) -> Result<(ProapoResult, Vec<Features>)> {
        let per_template = self.per_template()?;
        let scorer = TemplateScorer {
            per_template: &per_template,
            shots,
            labels,
            logit_scale: self.model.scale(),
        };
        let r = search(&scorer, &self.config)?;
        Ok((r, per_template))
    }

    /// Both stages on `shots`: the template search, then (with descriptions) the class-specific
    /// one; the final classifier (`[classes, dim]`, normalised).
    pub fn fit(&self, shots: &Features, labels: &[usize]) -> Result<ProapoFit> {
        let (templates, per_template) = self.search(shots, labels)?;
        let Some(descriptions) = &self.descriptions else {
            let scorer = TemplateScorer {
                per_template: &per_template,
                shots,
                labels,
                logit_scale: 1.0,
            };
            return Ok(ProapoFit {
                classifier: scorer.classifier(&templates.best),
                templates,
                descriptions: None,
            });
        };
        if descriptions.len() != self.classes.len() {
            return Err(TaskError::Invalid {
                task: "proapo".into(),
                reason: format!(
                    "{} description lists for {} classes",
                    descriptions.len(),
                    self.classes.len()
                ),
            });
        }
        // The chosen templates' class embeddings, summed (each prompt one ensemble member).
        let first = &per_template[templates.best[0]];
        let mut base = Features {
            data: vec![0.0; first.data.len()],
            rows: first.rows,
            dim: first.dim,
        };
        for &t in &templates.best {
            base.data
                .iter_mut()
                .zip(&per_template[t].data)
                .for_each(|(a, b)| *a += b);
        }
        let embedded = descriptions
            .iter()
            .map(|d| {
                if d.is_empty() {
                    return Ok(Features {
                        data: Vec::new(),
                        rows: 0,
                        dim: base.dim,
                    });
                }
                let refs: Vec<&str> = d.iter().map(String::as_str).collect();
                crate::embed::embed_texts(self.model, self.tokenizer, &refs, 256, &self.device)
            })
            .collect::<Result<Vec<_>>>()?;
        let scale = self.model.scale();
        let r = search_descriptions(&base, &embedded, shots, labels, scale, &self.config)?;
        Ok(ProapoFit {
            classifier: describe_classifier(&base, &embedded, &r.chosen),
            templates,
            descriptions: Some(r),
        })
    }
}

/// What [`Proapo::fit`] found.
#[derive(Debug, Clone)]
pub struct ProapoFit {
    /// The template stage.
    pub templates: ProapoResult,
    /// The class-specific stage, when descriptions were given.
    pub descriptions: Option<DescriptionResult>,
    /// The final classifier, `[classes, dim]`, normalised.
    pub classifier: Features,
}

impl<B: Backend> FewShotMethod for Proapo<'_, B> {
    fn name(&self) -> String {
        "proapo".into()
    }
    fn family(&self) -> Family {
        Family::Prompt
    }
    fn trainable_params(&self, _: usize, _: usize) -> usize {
        0
    }
    fn predict(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>> {
        ctx.check_names("proapo", self.classes)?;
        let fit = self.fit(shots, shot_labels)?;
        Ok(argmax_rows(&scores(test, &fit.classifier)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: [f32; 3]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Three classes on three axes. Template 0 (the baseline) swaps classes 0 and 1; templates
    /// 1–3 each point one class right and blur the others; template 4 is noise. Only a set of
    /// good templates classifies every shot.
    fn library() -> (Vec<Features>, Features, Vec<usize>) {
        let class = |rows: [[f32; 3]; 3]| Features {
            data: rows.iter().flat_map(|r| unit(*r)).collect(),
            rows: 3,
            dim: 3,
        };
        let lib = vec![
            class([[0.0, 1.0, 0.1], [1.0, 0.0, 0.1], [0.1, 0.1, 1.0]]),
            class([[1.0, 0.0, 0.0], [1.0, 0.2, 0.9], [1.0, 0.9, 0.2]]),
            class([[0.2, 1.0, 0.9], [0.0, 1.0, 0.0], [0.9, 1.0, 0.2]]),
            class([[0.2, 0.9, 1.0], [0.9, 0.2, 1.0], [0.0, 0.0, 1.0]]),
            class([[0.5, 0.5, 0.6], [0.6, 0.5, 0.5], [0.5, 0.6, 0.5]]),
        ];
        let shots = Features {
            data: [
                [1.0, 0.1, 0.1],
                [0.1, 1.0, 0.2],
                [0.2, 0.1, 1.0],
                [0.9, 0.3, 0.0],
            ]
            .iter()
            .flat_map(|r| unit(*r))
            .collect(),
            rows: 4,
            dim: 3,
        };
        (lib, shots, vec![0, 1, 2, 0])
    }

    #[test]
    fn fitness_is_the_weighted_accuracies_minus_the_cross_entropy() {
        let (lib, shots, labels) = library();
        let s = TemplateScorer {
            per_template: &lib,
            shots: &shots,
            labels: &labels,
            logit_scale: 10.0,
        };
        let cfg = ProapoConfig::default();
        let f = s.fitness(&[1, 2], [cfg.top1, cfg.top5, cfg.ce]);
        // By hand: the ensemble of templates 1 and 2, logits 10·cos, CE over the four shots.
        let w = s.classifier(&[1, 2]);
        let (mut ce, mut right) = (0.0, 0);
        for (i, &y) in labels.iter().enumerate() {
            let l: Vec<f64> = (0..3)
                .map(|c| {
                    10.0 * (0..3)
                        .map(|k| f64::from(shots.row(i)[k] * w.row(c)[k]))
                        .sum::<f64>()
                })
                .collect();
            let lse = l.iter().map(|v| v.exp()).sum::<f64>().ln();
            ce += (lse - l[y]) / 4.0;
            let best = (0..3).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap();
            right += usize::from(best == y);
        }
        let top1 = 100.0 * right as f64 / 4.0;
        assert!(
            (f.top1 - top1).abs() < 1e-9 && (f.ce - ce).abs() < 1e-4,
            "{f:?} vs {top1} {ce}"
        );
        assert_eq!(f.top5, 100.0, "3 classes: every label is in the top 5");
        assert!((f.score - (0.5 * f.top1 + 0.05 * 100.0 - 10.0 * f.ce)).abs() < 1e-9);
        // The ensemble's class embedding is the normalised mean of its templates'.
        let mean: Vec<f32> = (0..3)
            .map(|k| lib[1].row(2)[k] + lib[2].row(2)[k])
            .collect();
        let want = unit([mean[0], mean[1], mean[2]]);
        for (got, want) in w.row(2).iter().zip(&want) {
            assert!((got - want).abs() < 1e-6);
        }
    }

    #[test]
    fn the_search_beats_the_baseline_monotonically_and_deterministically() {
        let (lib, shots, labels) = library();
        let s = TemplateScorer {
            per_template: &lib,
            shots: &shots,
            labels: &labels,
            logit_scale: 10.0,
        };
        let cfg = ProapoConfig {
            seed: 3,
            ..Default::default()
        };
        let r = search(&s, &cfg).unwrap();
        assert!(
            r.baseline.top1 < 50.0,
            "the baseline swaps two classes: {:?}",
            r.baseline
        );
        // The library is small enough to score every one of its 31 sets: the search finds the
        // best of them, and it beats the baseline.
        let (best, best_score) = (1u32..32)
            .map(|m| {
                let set: Vec<usize> = (0..5).filter(|i| m & (1 << i) != 0).collect();
                let f = s.fitness(&set, [cfg.top1, cfg.top5, cfg.ce]).score;
                (set, f)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!((r.best.clone(), r.fitness.score), (best, best_score));
        assert!(r.fitness.top1 > r.baseline.top1 && r.fitness.score > r.baseline.score);
        assert_eq!(r.history.len(), cfg.epochs + 1);
        assert!(
            r.history.windows(2).all(|w| w[1] >= w[0]),
            "{:?}",
            r.history
        );
        assert_eq!(*r.history.last().unwrap(), r.fitness.score);
        // No composition is scored twice: at most the 31 non-empty subsets of 5 templates.
        assert!(r.evaluated <= 5 + 31, "{}", r.evaluated);
        assert_eq!(search(&s, &cfg).unwrap(), r);
        // Zero items: the start set comes back unchanged, without a draw.
        let empty = evolve(
            0,
            &[],
            &|set| s.fitness(if set.is_empty() { &[1] } else { set }, [1.0, 0.0, 0.0]),
            &cfg,
        );
        assert!(empty.best.is_empty() && empty.evaluated == 0);
        let err = search(
            &TemplateScorer {
                per_template: &lib,
                shots: &shots,
                labels: &labels[..2],
                logit_scale: 10.0,
            },
            &cfg,
        )
        .unwrap_err();
        assert!(err.to_string().contains("4 shots for 2 labels"), "{err}");
    }

    /// The baseline template confuses classes 0 and 1; each has a right description (on its
    /// own axis) and a wrong one (on the other's, as an LLM describing the wrong class would).
    /// The stage searches the hardest classes first, picks the right descriptions, leaves the
    /// wrong ones out, and never lowers its best fitness.
    #[test]
    fn the_description_stage_keeps_right_descriptions_and_drops_wrong_ones() {
        let (lib, shots, labels) = library();
        let base = lib[0].clone();
        let d = |rows: &[[f32; 3]]| Features {
            data: rows.iter().flat_map(|r| unit(*r)).collect(),
            rows: rows.len(),
            dim: 3,
        };
        let descriptions = vec![
            d(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
            d(&[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.1, 0.9, 0.1]]),
            d(&[]),
        ];
        let cfg = ProapoConfig {
            seed: 5,
            ..Default::default()
        };
        let r = search_descriptions(&base, &descriptions, &shots, &labels, 10.0, &cfg).unwrap();
        // Classes 0 and 1 are wrong under the baseline; class 2 has no descriptions to search.
        assert_eq!(r.groups.concat().len(), 2, "{:?}", r.groups);
        assert!(
            r.chosen[0].contains(&0) && !r.chosen[0].contains(&1),
            "{:?}",
            r.chosen
        );
        assert!(!r.chosen[1].contains(&1), "{:?}", r.chosen);
        assert!(
            r.chosen[1].contains(&0) || r.chosen[1].contains(&2),
            "{:?}",
            r.chosen
        );
        assert!(r.chosen[2].is_empty());
        assert!(r.fitness.score > r.baseline.score);
        assert_eq!(r.fitness.top1, 100.0, "{:?}", r.fitness);
        assert!(
            r.history.windows(2).all(|w| w[1] >= w[0]),
            "{:?}",
            r.history
        );
        assert_eq!(*r.history.last().unwrap(), r.fitness.score);
        assert_eq!(
            search_descriptions(&base, &descriptions, &shots, &labels, 10.0, &cfg).unwrap(),
            r
        );
        // The classifier: base plus the chosen descriptions, normalised.
        let w = describe_classifier(&base, &descriptions, &r.chosen);
        let mut want: Vec<f32> = base.row(0).to_vec();
        for &j in &r.chosen[0] {
            want.iter_mut()
                .zip(descriptions[0].row(j))
                .for_each(|(a, b)| *a += b);
        }
        let want = unit([want[0], want[1], want[2]]);
        for (g, w) in w.row(0).iter().zip(&want) {
            assert!((g - w).abs() < 1e-6);
        }
    }

    #[test]
    fn weighted_draws_are_distinct_and_follow_the_weights() {
        let mut rng = Rng::new(1);
        let items = [10, 20, 30];
        let mut counts = [0; 3];
        for _ in 0..3000 {
            let d = weighted_choice(&mut rng, &items, &[8.0, 1.0, 1.0], 1, false);
            counts[items.iter().position(|&x| x == d[0]).unwrap()] += 1;
            let all = weighted_choice(&mut rng, &items, &[8.0, 1.0, 1.0], 3, false);
            let mut sorted = all.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![10, 20, 30]);
        }
        // p = 0.8 / 0.1 / 0.1; reversed, ∝ 1 − p: 0.2 / 0.9 / 0.9, so 10 comes 1 time in 10.
        assert!((2200..2600).contains(&counts[0]), "{counts:?}");
        let mut rev = 0;
        for _ in 0..3000 {
            rev +=
                usize::from(weighted_choice(&mut rng, &items, &[8.0, 1.0, 1.0], 1, true)[0] == 10);
        }
        assert!((240..360).contains(&rev), "{rev}");
    }
}
