//! Alignment objectives, as modules over features: the towers never know which one trains them.
//!
//! Under data parallelism each rank passes the *gathered* features of the global batch (its own
//! rows carrying gradient, see `vlp-train`'s `gather_with_grad`), so every objective here sees the
//! global batch, as open_clip's `--gather-with-grad` does.

mod affiliation;
mod dreamlip;
mod filip;
mod info_nce;
mod itm;
mod lxmert;
mod multi_label;
mod sigmoid;

pub use affiliation::{affiliation_loss, class_centres, same_class};
pub use dreamlip::{
    grouped_patches, grouping_loss, grouping_weights, multi_positive_loss, ot_loss,
};
pub use filip::{filip_loss, late_interaction, select_image_tokens};
pub use info_nce::{MAX_LOGIT_SCALE, clip_loss};
pub use itm::{hard_negatives, itm_loss};
pub use lxmert::{cross_entropy_per_position, smooth_l1_per_position};
pub use multi_label::{multi_label_loss, multi_label_loss_with_negatives};
pub use sigmoid::siglip_loss;

use serde::{Deserialize, Serialize};

/// Which objective trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// CLIP's symmetric InfoNCE with a learnable temperature.
    Clip,
    /// SigLIP's pairwise sigmoid loss with a learnable scale and bias.
    Siglip,
}
