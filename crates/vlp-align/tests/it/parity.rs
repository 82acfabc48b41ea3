//! Every output listed in the fixtures' README, within 1e-4 of transformers and open_clip, on
//! every compiled backend.

use vlp_align::Layout;
use vlp_align::parity::check_parity;
use vlp_align::pretrained::load_pretrained;

use crate::reference;

vlp_core::backend_tests! {
    fn check(dir: &str, layout: Layout, expect: &[&str]) {
        let dev = default_device();
        let p = load_pretrained::<B>(reference(dir), &dev).unwrap();
        assert_eq!(p.layout, layout);
        let report = check_parity(
            &p,
            reference(&format!("{dir}/expected.safetensors")),
            1e-4,
            &dev,
        )
        .unwrap();
        for c in &report.checks {
            println!(
                "{dir} {:<28} {:?} max abs err {:.3e} mean {:.3e}",
                c.name, c.shape, c.max_abs_err, c.mean_abs_err
            );
        }
        assert!(
            report.unknown.is_empty(),
            "unknown tensors {:?}",
            report.unknown
        );
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        for e in expect {
            assert!(names.contains(e), "{e} was not compared");
        }
        let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
        assert!(failed.is_empty(), "{dir}: {failed:?}");
    }

    #[test]
    fn clip_hf_matches_transformers() {
        check(
            "clip_hf",
            Layout::Hf,
            &[
                "vision_embeddings",
                "vision_last_hidden_state",
                "vision_pooler_output",
                "text_embeddings",
                "text_last_hidden_state",
                "text_pooler_output",
                "image_embeds",
                "text_embeds",
                "logits_per_image",
            ],
        );
    }

    #[test]
    fn clip_openclip_matches_open_clip() {
        check(
            "clip_openclip",
            Layout::OpenClip,
            &[
                "image_features",
                "text_features",
                "image_features_normalized",
                "text_features_normalized",
                "logits_per_image",
            ],
        );
    }

    #[test]
    fn siglip_hf_matches_transformers() {
        check(
            "siglip_hf",
            Layout::Hf,
            &[
                "vision_pooler_output",
                "text_pooler_output",
                "image_embeds",
                "text_embeds",
                "logits_per_image",
            ],
        );
    }
}
