//! The offline description source: seeded templates with injected wrong descriptions.

use vlp_data::shapes::Rng;

use super::{DescribeError, Description, DescriptionSource, ImageSubject};

/// Offline, seeded descriptions from templates, a share of which deliberately describe another
/// class, so that methods meant to survive noisy LLM output are tested against noise.
#[derive(Debug, Clone)]
pub struct TemplateDescriptions {
    /// Templates with `{}` for the class name.
    pub templates: Vec<String>,
    /// Templates with `{}` for an image's objects ("a red circle and a blue square") or, when
    /// it has none, its caption.
    pub image_templates: Vec<String>,
    /// Fraction of class descriptions that name a different class.
    pub error_rate: f32,
    /// Seed.
    pub seed: u64,
}

impl Default for TemplateDescriptions {
    fn default() -> Self {
        Self {
            templates: vec![
                "a photo of a {}.".into(),
                "a {}, seen clearly.".into(),
                "an image showing a {}.".into(),
                "a simple drawing of a {}.".into(),
                "the {} stands out from the background.".into(),
            ],
            image_templates: vec![
                "a picture of {}.".into(),
                "an image that shows {}.".into(),
                "{}, drawn on a plain background.".into(),
            ],
            error_rate: 0.2,
            seed: 0,
        }
    }
}

/// "a red circle", "an orange star".
fn with_article(noun: &str) -> String {
    let vowel = noun
        .chars()
        .next()
        .is_some_and(|c| "aeiouAEIOU".contains(c));
    format!("{} {noun}", if vowel { "an" } else { "a" })
}

/// "a red circle", "a red circle and a blue square", "a, b and c".
fn list_phrase(objects: &[String]) -> String {
    let items: Vec<String> = objects.iter().map(|o| with_article(o)).collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

impl DescriptionSource for TemplateDescriptions {
    fn describe_observed(
        &self,
        classes: &[String],
        per_class: usize,
        on_class_done: &(dyn Fn() + Sync),
    ) -> Result<Vec<Vec<Description>>, DescribeError> {
        if self.templates.is_empty() || !(0.0..=1.0).contains(&self.error_rate) {
            return Err(DescribeError::Invalid {
                subject: "template descriptions".into(),
                reason: format!(
                    "need at least one template and an error rate in [0, 1] (got {} templates, rate {})",
                    self.templates.len(),
                    self.error_rate
                ),
            });
        }
        let mut rng = Rng::new(self.seed);
        Ok(classes
            .iter()
            .enumerate()
            .map(|(ci, class)| {
                let list = (0..per_class)
                    .map(|k| {
                        let template = &self.templates[k % self.templates.len()];
                        let wrong = classes.len() > 1 && rng.chance(self.error_rate);
                        let named = if wrong {
                            let other = (ci + 1 + rng.below(classes.len() - 1)) % classes.len();
                            &classes[other]
                        } else {
                            class
                        };
                        Description {
                            class: class.clone(),
                            text: template.replace("{}", named),
                            wrong,
                        }
                    })
                    .collect();
                on_class_done();
                list
            })
            .collect())
    }

    fn describe_image(
        &self,
        subject: &ImageSubject,
        n: usize,
    ) -> Result<Vec<String>, DescribeError> {
        if subject.is_empty() || self.image_templates.is_empty() {
            return Err(DescribeError::Invalid {
                subject: format!("image {:?}", subject.key),
                reason: "nothing to describe: no caption, no objects (or no image templates)"
                    .into(),
            });
        }
        let filler = if subject.objects.is_empty() {
            let caption = subject.caption.as_deref().unwrap_or_default().trim();
            caption.trim_end_matches('.').to_string()
        } else {
            list_phrase(&subject.objects)
        };
        Ok((0..n)
            .map(|k| self.image_templates[k % self.image_templates.len()].replace("{}", &filler))
            .collect())
    }

    fn name(&self) -> String {
        format!(
            "template(seed {}, error rate {})",
            self.seed, self.error_rate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn noise_rate_is_controlled_and_reproducible() {
        let classes = names(&["red circle", "blue square", "green star"]);
        let src = TemplateDescriptions {
            error_rate: 0.25,
            seed: 9,
            ..Default::default()
        };
        let done = std::sync::atomic::AtomicUsize::new(0);
        let d = src
            .describe_observed(&classes, 400, &|| {
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .unwrap();
        assert_eq!(done.into_inner(), 3);
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|l| l.len() == 400));
        let wrong = d.iter().flatten().filter(|x| x.wrong).count() as f32 / 1200.0;
        assert!((0.2..0.3).contains(&wrong), "{wrong}");
        for (c, list) in classes.iter().zip(&d) {
            for x in list {
                assert_eq!(&x.class, c);
                assert_eq!(x.text.contains(c.as_str()), !x.wrong, "{x:?}");
            }
        }
        assert_eq!(d, src.describe(&classes, 400).unwrap());
        let clean = TemplateDescriptions {
            error_rate: 0.0,
            ..Default::default()
        }
        .describe(&classes, 10)
        .unwrap();
        assert!(clean.iter().flatten().all(|x| !x.wrong));
        let bad = TemplateDescriptions {
            error_rate: 1.5,
            ..Default::default()
        };
        let err = bad.describe(&classes, 1).unwrap_err().to_string();
        assert!(err.contains("error rate"), "{err}");
    }

    #[test]
    fn image_descriptions_name_the_objects_or_the_caption() {
        let src = TemplateDescriptions::default();
        let objects = ImageSubject {
            key: "k1".into(),
            caption: Some("a red circle.".into()),
            objects: names(&["red circle", "orange star", "blue square"]),
        };
        let d = src.describe_image(&objects, 4).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(
            d[0],
            "a picture of a red circle, an orange star and a blue square."
        );
        assert_eq!(d[3], d[0]);
        let caption = ImageSubject {
            key: "k2".into(),
            caption: Some("two shapes on grey. ".into()),
            objects: vec![],
        };
        assert_eq!(
            src.describe_image(&caption, 1).unwrap(),
            vec!["a picture of two shapes on grey."]
        );
        let empty = ImageSubject {
            key: "k3".into(),
            caption: Some("  ".into()),
            objects: vec![],
        };
        let err = src.describe_image(&empty, 2).unwrap_err().to_string();
        assert!(
            err.contains("\"k3\"") && err.contains("nothing to describe"),
            "{err}"
        );
    }
}
