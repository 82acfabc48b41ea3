//! Visual question answering as classification over an answer table (LXMERT's and VQA v2's
//! protocol): the table of answers a model scores, and accuracy overall and per question type.
//!
//! Every ShapesWorld question has one exact answer, so a prediction scores 1 when it equals the
//! answer and 0 otherwise (VQA v2's `min(humans agreeing / 3, 1)` with one annotator). A
//! question whose answer is not in the table counts as wrong, and is counted apart.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;
use vlp_data::shapes::{Colour, NUMBERS, Shape};

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
