//! Presenting results: the confusion-matrix heat map, few-shot tables and the accuracy-against-
//! shots plot.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Result, TaskError};

/// Registers a system font for plot labels once (plotters draws text only with a font it is
/// handed); whether one was found. Without one, plots are drawn without labels.
pub fn plot_font() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        const CANDIDATES: &[&str] = &[
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "/Library/Fonts/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ];
        let Some(bytes) = CANDIDATES.iter().find_map(|p| std::fs::read(p).ok()) else {
            return false;
        };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// Few-shot rows as a text table: method, k, mean, std, trained parameters, images.
pub fn few_shot_table(rows: &[crate::fewshot::FewShotRow]) -> String {
    let mut t = format!(
        "{:<14} {:<18} {:>4} {:>8} {:>8} {:>12} {:>7}\n",
        "method", "family", "k", "mean", "std", "parameters", "images"
    );
    for r in rows {
        let family = r
            .family
            .map(|f| format!("{f:?}").to_lowercase())
            .unwrap_or_default();
        t += &format!(
            "{:<14} {:<18} {:>4} {:>8.4} {:>8.4} {:>12} {:>7}\n",
            r.method, family, r.k, r.mean, r.std, r.trainable_params, r.samples
        );
    }
    t
}

/// Cross-domain rows as a text table: method, k, domain, mean, std, the domain gap (MMD²).
pub fn cross_domain_table(rows: &[crate::fewshot::CrossDomainRow]) -> String {
    let mut t = format!(
        "{:<14} {:>4} {:<12} {:>8} {:>8} {:>8}\n",
        "method", "k", "domain", "mean", "std", "MMD²"
    );
    for r in rows {
        t += &format!(
            "{:<14} {:>4} {:<12} {:>8.4} {:>8.4} {:>8.4}\n",
            r.method, r.k, r.domain, r.mean, r.std, r.mmd2
        );
    }
    t
}

/// Plots mean accuracy against shots, one line per method (`(method, [(k, accuracy)])`, k in
/// increasing order), on a log₂ axis of k, to a PNG.
pub fn accuracy_vs_shots_png(series: &[(String, Vec<(usize, f64)>)], path: &Path) -> Result<()> {
    let ks: Vec<usize> = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .collect();
    let (Some(&lo), Some(&hi)) = (ks.iter().min(), ks.iter().max()) else {
        return Err(TaskError::Invalid {
            task: "accuracy plot".into(),
            reason: "no points".into(),
        });
    };
    if lo == 0 {
        return Err(TaskError::Invalid {
            task: "accuracy plot".into(),
            reason: "k = 0 has no place on a log axis".into(),
        });
    }
    let fail = |e: &dyn std::fmt::Display| TaskError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let font = plot_font();
    let root = BitMapBackend::new(path, (640, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let x = |k: usize| (k as f64).log2();
    let (x0, x1) = (x(lo) - 0.2, x(hi).max(x(lo) + 1.0) + 0.2);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if font {
        builder
            .caption("accuracy against shots", ("sans-serif", 20))
            .x_label_area_size(30)
            .y_label_area_size(45);
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, 0.0..1.0)
        .map_err(|e| fail(&e))?;
    let mut mesh = chart.configure_mesh();
    if font {
        mesh.x_desc("shots per class (log₂)")
            .y_desc("top-1")
            .x_label_formatter(&|v| format!("{}", 2f64.powf(*v).round()));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| fail(&e))?;
    let colours = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(255, 140, 0),
    ];
    for (i, (name, s)) in series.iter().enumerate() {
        let c = colours[i % colours.len()];
        let pts: Vec<(f64, f64)> = s.iter().map(|&(k, a)| (x(k), a)).collect();
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(|e| fail(&e))?;
        let drawn = chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| fail(&e))?;
        if font {
            drawn
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
    }
    if font && !series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

/// The plot's series from few-shot rows: each method's mean accuracy at each k.
pub fn shots_series(rows: &[crate::fewshot::FewShotRow]) -> Vec<(String, Vec<(usize, f64)>)> {
    let mut out: Vec<(String, Vec<(usize, f64)>)> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|(m, _)| *m == r.method) {
            Some((_, s)) => s.push((r.k, r.mean)),
            None => out.push((r.method.clone(), vec![(r.k, r.mean)])),
        }
    }
    for (_, s) in &mut out {
        s.sort_by_key(|p| p.0);
    }
    out
}

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

    /// The plot puts each method's points where its accuracy is: a method at 1.0 lights pixels
    /// near the top, one at 0.0 near the bottom; and the series group rows by method.
    #[test]
    fn plots_accuracy_against_shots_per_method() {
        use crate::fewshot::FewShotRow;
        let row = |m: &str, k: usize, mean: f64| FewShotRow {
            method: m.into(),
            k,
            mean,
            std: 0.0,
            accuracies: vec![mean],
            trainable_params: 0,
            samples: k,
            family: Some(crate::fewshot::Family::Baseline),
        };
        let rows = [
            row("top", 4, 1.0),
            row("bottom", 1, 0.0),
            row("top", 1, 1.0),
            row("bottom", 4, 0.0),
        ];
        let series = shots_series(&rows);
        assert_eq!(
            series,
            vec![
                ("top".to_string(), vec![(1, 1.0), (4, 1.0)]),
                ("bottom".to_string(), vec![(1, 0.0), (4, 0.0)])
            ]
        );
        let table = few_shot_table(&rows);
        assert_eq!(table.lines().count(), 5);
        assert!(table.lines().nth(1).unwrap().starts_with("top"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shots.png");
        accuracy_vs_shots_png(&series, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (640, 480));
        // Red ("top", the first series) in the upper half, blue ("bottom") in the lower half;
        // the left third only, away from the legend (upper right) when a font draws one.
        let (mut red, mut blue) = (Vec::new(), Vec::new());
        for (_, y, p) in img.enumerate_pixels().filter(|(x, _, _)| *x < 213) {
            match (p[0], p[1], p[2]) {
                (255, 0, 0) => red.push(y),
                (0, 0, 255) => blue.push(y),
                _ => {}
            }
        }
        assert!(!red.is_empty() && !blue.is_empty());
        assert!(
            red.iter().all(|&y| y < 240),
            "red at {:?}",
            red.iter().max()
        );
        assert!(
            blue.iter().all(|&y| y > 240),
            "blue at {:?}",
            blue.iter().min()
        );
        assert!(accuracy_vs_shots_png(&[], &p).is_err());
    }

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
