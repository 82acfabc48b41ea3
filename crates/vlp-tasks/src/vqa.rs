//! Visual question answering as classification over an answer table (LXMERT's and VQA v2's
//! protocol): the table of answers a model scores, and accuracy overall and per question type.
//!
//! Every ShapesWorld question has one exact answer, so a prediction scores 1 when it equals the
//! answer and 0 otherwise (VQA v2's `min(humans agreeing / 3, 1)` with one annotator). A
//! question whose answer is not in the table counts as wrong, and is counted apart.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use std::sync::Arc;

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use serde::Serialize;
use vlp_align::model::lxmert::{Lxmert, LxmertConfig, LxmertInput, is_lxmert_dir, load_lxmert};
use vlp_align::pretrained::read_preprocessor_config;
use vlp_data::preprocess::ImagePipeline;
use vlp_data::sample::{Annotations, ObjectBox};
use vlp_data::shapes::{Colour, NUMBERS, Shape};
use vlp_text::tokenizer::resolve_for_model;
use vlp_text::{Padding, Tokenizer};

use crate::battery::EvalImages;

use crate::error::{Result, TaskError};

fn invalid(reason: String) -> TaskError {
    TaskError::Invalid {
        task: "vqa".into(),
        reason,
    }
}

/// Answers as VQA's evaluation compares them: lower case, trimmed, a final full stop dropped.
pub fn normalize_answer(answer: &str) -> String {
    answer.trim().trim_end_matches('.').trim().to_lowercase()
}

/// The answers a QA head scores, one per output.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerTable {
    answers: Vec<String>,
    index: HashMap<String, usize>,
}

impl AnswerTable {
    /// A table of `answers` (normalised), in order.
    ///
    /// # Errors
    /// When the table is empty or an answer appears twice.
    pub fn new(answers: Vec<String>) -> Result<Self> {
        let answers: Vec<String> = answers.iter().map(|a| normalize_answer(a)).collect();
        if answers.is_empty() {
            return Err(invalid("the answer table is empty".into()));
        }
        let mut index = HashMap::with_capacity(answers.len());
        for (i, a) in answers.iter().enumerate() {
            if a.is_empty() {
                return Err(invalid(format!("answer {i} is empty")));
            }
            if let Some(j) = index.insert(a.clone(), i) {
                return Err(invalid(format!("answer \"{a}\" appears at {j} and {i}")));
            }
        }
        Ok(Self { answers, index })
    }

    /// Every answer ShapesWorld's questions have: colours, shapes, counts, yes and no.
    pub fn shapes_world() -> Self {
        let answers = Colour::ALL
            .iter()
            .map(|c| c.name())
            .chain(Shape::ALL.iter().map(|s| s.name()))
            .chain(NUMBERS)
            .chain(["yes", "no"])
            .map(String::from)
            .collect();
        Self::new(answers).expect("ShapesWorld's answers are distinct")
    }

    /// The answers given at least `min_count` times, most frequent first (ties by name), as
    /// LXMERT and VQA models build theirs from training answers.
    pub fn from_answers<'a>(
        answers: impl IntoIterator<Item = &'a str>,
        min_count: usize,
    ) -> Result<Self> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for a in answers {
            let a = normalize_answer(a);
            if !a.is_empty() {
                *counts.entry(a).or_default() += 1;
            }
        }
        let mut kept: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(_, n)| *n >= min_count.max(1))
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Self::new(kept.into_iter().map(|(a, _)| a).collect())
    }

    /// Number of answers.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether the table is empty (never, for a table built by [`new`](Self::new)).
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The answers, in output order.
    pub fn answers(&self) -> &[String] {
        &self.answers
    }

    /// Output index of `answer` (normalised first), if the table has it.
    pub fn index(&self, answer: &str) -> Option<usize> {
        self.index.get(&normalize_answer(answer)).copied()
    }

    /// The answer of output `i`.
    pub fn answer(&self, i: usize) -> Option<&str> {
        self.answers.get(i).map(String::as_str)
    }

    /// Reads a table written by [`write`](Self::write) (a JSON list of answers).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let answers: Vec<String> = serde_json::from_str(&text).map_err(|e| {
            invalid(format!(
                "{}: not a JSON list of answers: {e}",
                path.display()
            ))
        })?;
        Self::new(answers).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Writes the table as a JSON list of answers.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.answers).expect("strings serialise");
        vlp_core::io::write_atomic(path, text.as_bytes()).map_err(|e| invalid(e.to_string()))
    }
}

/// Accuracy of one group of questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Questions answered right.
    pub correct: usize,
    /// Questions.
    pub total: usize,
}

impl Tally {
    /// `correct / total` (0 for no question).
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// VQA accuracy overall and per question type.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VqaReport {
    /// Every question.
    pub overall: Tally,
    /// Per question type (`colour`, `count`, ...).
    pub per_kind: BTreeMap<String, Tally>,
    /// Questions whose answer is not in the table (all counted wrong).
    pub out_of_table: usize,
    /// Questions about images without a visible object box, answered with the whole image as
    /// the one object ([`evaluate_vqa`]; a box-reading model is blind to such images' objects).
    pub whole_image: usize,
}

/// One evaluated question: its reference answer and type.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference<'a> {
    /// The right answer.
    pub answer: &'a str,
    /// Its type (empty when unknown).
    pub kind: &'a str,
}

/// Scores `predicted` (answer-table indices) against `references`, one each.
///
/// # Errors
/// When the counts differ or a prediction is outside the table.
pub fn vqa_report(
    predicted: &[usize],
    references: &[Reference<'_>],
    table: &AnswerTable,
) -> Result<VqaReport> {
    if predicted.len() != references.len() {
        return Err(invalid(format!(
            "{} predictions for {} questions",
            predicted.len(),
            references.len()
        )));
    }
    let mut report = VqaReport::default();
    for (i, (&p, r)) in predicted.iter().zip(references).enumerate() {
        if p >= table.len() {
            return Err(invalid(format!(
                "prediction {i} is answer {p} of a table of {}",
                table.len()
            )));
        }
        let want = table.index(r.answer);
        if want.is_none() {
            report.out_of_table += 1;
        }
        let right = want == Some(p);
        let kind = if r.kind.is_empty() { "other" } else { r.kind };
        for t in [
            &mut report.overall,
            report.per_kind.entry(kind.to_string()).or_default(),
        ] {
            t.total += 1;
            t.correct += usize::from(right);
        }
    }
    Ok(report)
}

/// A sample's objects with a visible box (a crop can leave a box empty).
pub fn visible_objects(a: &Annotations) -> Vec<&ObjectBox> {
    a.boxes.iter().filter(|b| b.area() > 0.0).collect()
}

/// A sample's object boxes in model pixels for a box-reading model ([`visible_objects`]); an
/// image without any gets one box over the whole image (such a model needs at least one object).
pub fn object_boxes(a: &Annotations, image_size: usize) -> Vec<[f32; 4]> {
    let visible = visible_objects(a);
    if visible.is_empty() {
        let s = image_size as f32;
        vec![[0.0, 0.0, s, s]]
    } else {
        visible.iter().map(|b| b.bbox).collect()
    }
}

/// An LXMERT model with what answering needs: its tokenizer, answer table and preprocessing
/// (a `vlp train` run's `final/` directory of an `lxmert` run).
pub struct VqaModel<B: Backend> {
    /// The model.
    pub model: Lxmert<B>,
    /// Its architecture.
    pub config: LxmertConfig,
    /// Questions' tokenizer.
    pub tokenizer: Arc<dyn Tokenizer>,
    /// The answers its head scores.
    pub answers: AnswerTable,
    /// Image preprocessing.
    pub pipeline: ImagePipeline,
}

/// Loads a [`VqaModel`] from `dir` (`lxmert_config.json`, `model.safetensors`, `answers.json`,
/// `tokenizer.json`, `preprocessor_config.json`); a directory of another kind of model is an
/// error saying so.
pub fn load_vqa_model<B: Backend>(dir: &Path, device: &B::Device) -> Result<VqaModel<B>> {
    if !is_lxmert_dir(dir) {
        return Err(invalid(format!(
            "{}: not a question-answering model (no {}; train one with `[method] kind = \"lxmert\"`)",
            dir.display(),
            vlp_align::model::lxmert::CONFIG_FILE
        )));
    }
    let (model, config) = load_lxmert::<B>(dir, device)?;
    let answers = AnswerTable::read(&dir.join("answers.json"))?;
    if answers.len() != config.num_answers {
        return Err(invalid(format!(
            "{}: answers.json has {} answers, the model scores {}",
            dir.display(),
            answers.len(),
            config.num_answers
        )));
    }
    let tokenizer = resolve_for_model(dir, None, config.max_len, Padding::Zero)
        .map_err(|e| invalid(e.to_string()))?;
    if tokenizer.vocab_size != config.vocab_size {
        return Err(invalid(format!(
            "{}: the tokenizer has {} ids, the model {}",
            dir.display(),
            tokenizer.vocab_size,
            config.vocab_size
        )));
    }
    let pre = dir.join("preprocessor_config.json");
    if !pre.is_file() {
        return Err(invalid(format!(
            "{}: no preprocessor_config.json",
            dir.display()
        )));
    }
    let pipeline = read_preprocessor_config(&pre, 0)?;
    pipeline
        .validate()
        .map_err(|e| invalid(format!("{}: {e}", pre.display())))?;
    Ok(VqaModel {
        model,
        config,
        tokenizer: tokenizer.tokenizer,
        answers,
        pipeline,
    })
}

/// One answer: its table index, text and probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answered {
    /// Index in the answer table.
    pub index: usize,
    /// The answer.
    pub answer: String,
    /// Its softmax probability.
    pub probability: f32,
}

/// Answers `questions[i]` about image `images[i]` with objects `boxes[i]` (model pixels).
///
/// # Shapes
/// - `images`: `[n, 3, size, size]`, preprocessed
pub fn answer<B: Backend>(
    model: &Lxmert<B>,
    tokenizer: &dyn Tokenizer,
    answers: &AnswerTable,
    images: Tensor<B, 4>,
    boxes: Vec<Vec<[f32; 4]>>,
    questions: &[&str],
) -> Result<Vec<Answered>> {
    let device = images.device();
    let (ids, mask) = tokenizer
        .encode_batch(questions)
        .map_err(|e| invalid(e.to_string()))?
        .to_tensors::<B>(&device);
    let out = model.forward(LxmertInput {
        images,
        boxes,
        input_ids: ids,
        attention_mask: mask,
        feature_replacements: Vec::new(),
    })?;
    let probs = softmax(model.answer_logits(out.pooled), 1);
    let [n, k] = probs.dims();
    let p: Vec<f32> = probs
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| invalid(format!("reading answer scores: {e:?}")))?;
    Ok((0..n)
        .map(|i| {
            let row = &p[i * k..(i + 1) * k];
            let best = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            Answered {
                index: best,
                answer: answers.answer(best).unwrap_or_default().to_string(),
                probability: row[best],
            }
        })
        .collect())
}

/// VQA accuracy of `model` on every question of `set`'s images (`None` when there is none).
pub fn evaluate_vqa<B: Backend>(
    model: &Lxmert<B>,
    tokenizer: &dyn Tokenizer,
    answers: &AnswerTable,
    set: &EvalImages,
    device: &B::Device,
) -> Result<Option<VqaReport>> {
    let mut predicted = Vec::new();
    let mut references: Vec<(&str, &str)> = Vec::new();
    let mut whole_image = 0;
    let mut offset = 0;
    for px in set.tensors::<B>(device) {
        let n = px.dims()[0];
        let rows: Vec<(usize, &vlp_data::sample::QuestionAnswer)> = (0..n)
            .flat_map(|i| set.annotations[offset + i].qa.iter().map(move |q| (i, q)))
            .collect();
        for chunk in rows.chunks(128) {
            let idx: Vec<i64> = chunk.iter().map(|(i, _)| *i as i64).collect();
            let images = px.clone().select(
                0,
                Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [chunk.len()]), device),
            );
            let boxes = chunk
                .iter()
                .map(|(i, _)| object_boxes(&set.annotations[offset + i], set.image_size))
                .collect();
            whole_image += chunk
                .iter()
                .filter(|(i, _)| visible_objects(&set.annotations[offset + i]).is_empty())
                .count();
            let questions: Vec<&str> = chunk.iter().map(|(_, q)| q.question.as_str()).collect();
            let got = answer(model, tokenizer, answers, images, boxes, &questions)?;
            predicted.extend(got.into_iter().map(|a| a.index));
            references.extend(
                chunk
                    .iter()
                    .map(|(_, q)| (q.answer.as_str(), q.kind.as_str())),
            );
        }
        offset += n;
    }
    if references.is_empty() {
        return Ok(None);
    }
    let refs: Vec<Reference<'_>> = references
        .iter()
        .map(|&(answer, kind)| Reference { answer, kind })
        .collect();
    let mut report = vqa_report(&predicted, &refs, answers)?;
    report.whole_image = whole_image;
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_world_table_answers_every_generated_question() {
        let table = AnswerTable::shapes_world();
        assert_eq!(table.len(), 6 + 5 + 5 + 2);
        let world = vlp_data::shapes::ShapesWorld::new(Default::default()).unwrap();
        let mut kinds = std::collections::BTreeSet::new();
        for i in 0..200 {
            for qa in world.sample(vlp_data::shapes::Split::Train, i).captions.vqa {
                assert!(
                    table.index(&qa.answer).is_some(),
                    "{}: {}",
                    qa.question,
                    qa.answer
                );
                kinds.insert(format!("{:?}", qa.kind));
            }
        }
        assert!(kinds.len() >= 5, "question types seen: {kinds:?}");
    }

    #[test]
    fn accuracy_overall_and_per_kind_by_hand() {
        let table = AnswerTable::new(vec!["Yes".into(), "no".into(), "red.".into()]).unwrap();
        assert_eq!(table.index(" RED "), Some(2));
        let refs = [
            Reference {
                answer: "yes",
                kind: "existence",
            },
            Reference {
                answer: "no",
                kind: "existence",
            },
            Reference {
                answer: "red",
                kind: "colour",
            },
            Reference {
                answer: "blue",
                kind: "colour",
            },
            Reference {
                answer: "no",
                kind: "",
            },
        ];
        let r = vqa_report(&[0, 0, 2, 2, 1], &refs, &table).unwrap();
        assert_eq!(
            r.overall,
            Tally {
                correct: 3,
                total: 5
            }
        );
        assert_eq!(
            r.per_kind["existence"],
            Tally {
                correct: 1,
                total: 2
            }
        );
        assert_eq!(
            r.per_kind["colour"],
            Tally {
                correct: 1,
                total: 2
            }
        );
        assert_eq!(
            r.per_kind["other"],
            Tally {
                correct: 1,
                total: 1
            }
        );
        assert_eq!(r.out_of_table, 1);
        assert!((r.overall.accuracy() - 0.6).abs() < 1e-12);
        let e = vqa_report(&[0], &refs, &table).unwrap_err().to_string();
        assert!(e.contains("1 predictions for 5 questions"), "{e}");
        let e = vqa_report(&[3], &refs[..1], &table)
            .unwrap_err()
            .to_string();
        assert!(e.contains("answer 3 of a table of 3"), "{e}");
    }

    #[test]
    fn tables_from_answers_files_and_bad_tables() {
        let t = AnswerTable::from_answers(["b", "a", "b", "c", "a", "b", " "], 2).unwrap();
        assert_eq!(t.answers(), ["b", "a"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("answers.json");
        t.write(&path).unwrap();
        assert_eq!(
            AnswerTable::read(&path).unwrap(),
            AnswerTable::new(vec!["b".into(), "a".into()]).unwrap()
        );
        std::fs::write(&path, "[\"x\", \"X\"]").unwrap();
        let e = AnswerTable::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("answers.json") && e.contains("\"x\" appears at 0 and 1"),
            "{e}"
        );
        std::fs::write(&path, "{}").unwrap();
        let e = AnswerTable::read(&path).unwrap_err().to_string();
        assert!(e.contains("not a JSON list"), "{e}");
        assert!(AnswerTable::from_answers(["a"], 2).is_err());
    }
}
