//! Prompt templates for zero-shot classification.

use std::path::Path;

use crate::error::{Result, TaskError};

/// OpenAI's 80 ImageNet prompt templates (CLIP's prompt ensemble), as open_clip ships them.
pub const OPENAI_IMAGENET_TEMPLATES: &[&str] = &[
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
];

/// The single template most papers report with.
pub const SIMPLE_TEMPLATES: &[&str] = &["a photo of a {}."];

/// Templates by name (`openai`, `simple`) or from a file with one template per line.
pub fn load_templates(spec: &str) -> Result<Vec<String>> {
    match spec {
        "openai" | "imagenet" => Ok(OPENAI_IMAGENET_TEMPLATES
            .iter()
            .map(|s| s.to_string())
            .collect()),
        "simple" => Ok(SIMPLE_TEMPLATES.iter().map(|s| s.to_string()).collect()),
        path => {
            let p = Path::new(path);
            let text = std::fs::read_to_string(p).map_err(|e| TaskError::Io {
                path: p.into(),
                source: e,
            })?;
            let t: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            if t.is_empty() {
                return Err(TaskError::Invalid {
                    task: "templates".into(),
                    reason: format!("{path}: no templates"),
                });
            }
            if let Some(bad) = t.iter().find(|l| !l.contains("{}")) {
                return Err(TaskError::Invalid {
                    task: "templates".into(),
                    reason: format!("{path}: template \"{bad}\" has no {{}}"),
                });
            }
            Ok(t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_sets() {
        assert_eq!(OPENAI_IMAGENET_TEMPLATES.len(), 80);
        assert!(OPENAI_IMAGENET_TEMPLATES.iter().all(|t| t.contains("{}")));
        assert_eq!(
            load_templates("simple").unwrap(),
            vec!["a photo of a {}.".to_string()]
        );
        let dir = std::env::temp_dir().join(format!("vlp-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.txt");
        std::fs::write(&p, "# mine\na {} here\n\nno placeholder\n").unwrap();
        assert!(
            load_templates(p.to_str().unwrap())
                .unwrap_err()
                .to_string()
                .contains("no placeholder")
        );
    }
}
