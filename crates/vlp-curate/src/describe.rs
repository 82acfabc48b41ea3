//! Sources of class descriptions (what GIST, DesCo, ProAPO and CoCu ask an LLM for).

use serde::{Deserialize, Serialize};
use vlp_data::shapes::Rng;

/// One generated description, with whether the source knows it to be wrong (for tests only:
/// a real LLM gives no such flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// The class it is meant to describe.
    pub class: String,
    /// The text.
    pub text: String,
    /// `true` when the text actually describes another class (injected noise).
    pub wrong: bool,
}

/// Anything that can describe classes: an LLM endpoint, a file of curated descriptions, or the
/// offline [`TemplateDescriptions`].
pub trait DescriptionSource {
    /// `per_class` descriptions of each class.
    fn describe(&self, classes: &[String], per_class: usize) -> Vec<Vec<Description>>;
}

/// Offline, seeded descriptions from templates, a share of which deliberately describe another
/// class, so that methods meant to survive noisy LLM output are tested against noise.
#[derive(Debug, Clone)]
pub struct TemplateDescriptions {
    /// Templates with `{}` for the class name.
    pub templates: Vec<String>,
    /// Fraction of descriptions that name a different class.
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
            error_rate: 0.2,
            seed: 0,
        }
    }
}

impl DescriptionSource for TemplateDescriptions {
    fn describe(&self, classes: &[String], per_class: usize) -> Vec<Vec<Description>> {
        let mut rng = Rng::new(self.seed);
        classes
            .iter()
            .enumerate()
            .map(|(ci, class)| {
                (0..per_class)
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
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_rate_is_controlled_and_reproducible() {
        let classes: Vec<String> = ["red circle", "blue square", "green star"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let src = TemplateDescriptions {
            error_rate: 0.25,
            seed: 9,
            ..Default::default()
        };
        let d = src.describe(&classes, 400);
        let wrong = d.iter().flatten().filter(|x| x.wrong).count() as f32 / 1200.0;
        assert!((0.2..0.3).contains(&wrong), "{wrong}");
        for (c, list) in classes.iter().zip(&d) {
            for x in list {
                assert_eq!(x.text.contains(c.as_str()), !x.wrong, "{x:?}");
            }
        }
        assert_eq!(d, src.describe(&classes, 400));
        let clean = TemplateDescriptions {
            error_rate: 0.0,
            ..Default::default()
        }
        .describe(&classes, 10);
        assert!(clean.iter().flatten().all(|x| !x.wrong));
    }
}
