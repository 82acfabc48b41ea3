//! Presenting results: the confusion-matrix heat map.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Result, TaskError};

/// Draws `confusion[true][predicted]` as a heat map (rows normalised to their class count),
/// true class down, predicted class across, to a PNG of `cell` pixels per class (at least 2).
pub fn confusion_png(confusion: &[Vec<usize>], path: &Path, cell: u32) -> Result<()> {
    let n = confusion.len();
    if n == 0 {
        return Err(TaskError::Invalid {
            task: "confusion matrix".into(),
            reason: "no classes".into(),
        });
    }
    let side = (n as u32 * cell.max(2)).max(64);
    let fail = |e: &dyn std::fmt::Display| TaskError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let root = BitMapBackend::new(path, (side, side)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let cells = root.split_evenly((n, n));
    for (k, area) in cells.iter().enumerate() {
        let (t, p) = (k / n, k % n);
        let total: usize = confusion[t].iter().sum();
        let v = if total == 0 {
            0.0
        } else {
            confusion[t][p] as f64 / total as f64
        };
        // White (0) to dark blue (1); the diagonal is what a good classifier lights up.
        let shade = |c: u8| (255.0 - v * (255.0 - c as f64)) as u8;
        area.fill(&RGBColor(shade(8), shade(48), shade(107)))
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_heat_map() {
        let dir = std::env::temp_dir().join(format!("vlp-confusion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.png");
        confusion_png(&[vec![5, 0], vec![1, 4]], &p, 20).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (64, 64));
        // The top-left cell (5/5 correct) is darker than the top-right (0).
        assert!(img.get_pixel(5, 5)[0] < img.get_pixel(60, 5)[0]);
    }
}
