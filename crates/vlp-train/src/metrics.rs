//! The run's metrics file (one JSON object per line) and the loss/metric plot.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// Appends JSON lines to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens (appending) `dir/metrics.jsonl`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::Io {
                path: path.clone(),
                source: e,
            })?;
        Ok(Self { path, file })
    }

    /// Writes one record.
    pub fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}").map_err(|e| TrainError::Io {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Every record written so far (also from earlier, resumed segments of the run).
    pub fn read(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .map(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Plots training loss (left) and evaluation metrics (right) over steps into `out` (PNG).
/// Labels are drawn when a system font is found.
pub fn plot(records: &[serde_json::Value], out: &Path) -> Result<()> {
    let series = |kind: &str, key: &str| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter(|r| r["kind"] == kind)
            .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
            .collect()
    };
    let loss = series("train", "loss");
    let evals: Vec<(&str, Vec<(f64, f64)>)> = [
        "zero_shot_top1",
        "zero_shot_top1_unseen",
        "retrieval_i2t_r1",
        "retrieval_t2i_r1",
    ]
    .iter()
    .map(|k| (*k, series("eval", k)))
    .filter(|(_, s)| !s.is_empty())
    .collect();
    let font = vlp_tasks::report::plot_font().then_some(());
    let fail = |e: &dyn std::fmt::Display| TrainError::Io {
        path: out.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let root = BitMapBackend::new(out, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(600);
    let max_step = loss
        .iter()
        .chain(evals.iter().flat_map(|(_, s)| s.iter()))
        .map(|p| p.0)
        .fold(1.0, f64::max);
    let max_loss = loss
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.1, f64::max);
    let colours = [RED, BLUE, GREEN, MAGENTA];
    for (area, title, ymax) in [
        (&left, "training loss", max_loss * 1.05),
        (&right, "evaluation", 1.0),
    ] {
        let mut builder = ChartBuilder::on(area);
        builder.margin(15);
        if font.is_some() {
            builder
                .caption(title, ("sans-serif", 20))
                .x_label_area_size(30)
                .y_label_area_size(45);
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..max_step, 0.0..ymax)
            .map_err(|e| fail(&e))?;
        let mut mesh = chart.configure_mesh();
        if font.is_none() {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.x_desc("step").draw().map_err(|e| fail(&e))?;
        if title == "training loss" {
            chart
                .draw_series(LineSeries::new(loss.clone(), &RED))
                .map_err(|e| fail(&e))?;
        } else {
            for (i, (name, s)) in evals.iter().enumerate() {
                let c = colours[i % colours.len()];
                let drawn = chart
                    .draw_series(LineSeries::new(s.clone(), c.stroke_width(2)))
                    .map_err(|e| fail(&e))?;
                if font.is_some() {
                    drawn
                        .label(*name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
                }
            }
            if font.is_some() && !evals.is_empty() {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| fail(&e))?;
            }
        }
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
