//! The scale family's output (figure 7): pivot tables (one column per size)
//! for results.md, PNG charts (one per curve, the bounded replica set and the
//! every-member-replicates contrast on the same axes), and result rows.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::chart::{self, Labels, Series};
use crate::report::{Better, Measured, Row};
use crate::stats::Summary;

pub(crate) fn measured(v: &[f64], failure: &Option<String>, what: &str) -> Measured {
    match (v.is_empty(), failure) {
        (true, Some(f)) => Measured::NotMeasured(f.clone()),
        _ => Measured::from_samples(v, what),
    }
}

/// One curve: its file, labels, unit, and the samples per x.
pub(crate) struct Curve {
    pub file: &'static str,
    pub metric: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub spread: &'static str,
    pub points: Vec<(usize, Measured)>,
}

fn cell(m: &Measured) -> String {
    match m {
        Measured::Value(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
        Measured::NotMeasured(why) if why == NONE => NONE.to_string(),
        Measured::NotMeasured(why) => format!("not measured: {why}"),
    }
}

/// A cell with nothing to measure (no nonvoter in a cluster of 3).
pub(crate) const NONE: &str = "—";

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The pivot table of `curves` (one column per size) and the chart links.
pub(crate) fn section(title: &str, intro: &str, curves: &[Curve], charts: &[(String, Result<()>)]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{intro}\n");
    let mut sizes: Vec<usize> = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let _ = write!(md, "| {title} | unit |");
    for s in &sizes {
        let _ = write!(md, " {s} members |");
    }
    let _ = write!(md, "\n| --- | --- |");
    for _ in &sizes {
        let _ = write!(md, " --- |");
    }
    md.push('\n');
    for c in curves {
        let _ = write!(md, "| {} | {} |", c.metric, c.unit);
        for s in &sizes {
            let v = c.points.iter().find(|p| p.0 == *s).map_or_else(|| "—".to_string(), |p| cell(&p.1));
            let _ = write!(md, " {v} |");
        }
        md.push('\n');
    }
    md.push('\n');
    for (file, r) in charts {
        match r {
            Ok(()) => {
                let _ = writeln!(md, "- [{file}]({file})");
            }
            Err(e) => {
                let _ = writeln!(md, "- {file}: not drawn: {e:#}");
            }
        }
    }
    md
}

fn points(c: &Curve) -> Vec<chart::Point> {
    c.points
        .iter()
        .filter_map(|(n, m)| match m {
            Measured::Value(Summary { median, min, max, .. }) => {
                Some(chart::Point { x: *n as f64, median: *median, min: *min, max: *max })
            }
            Measured::NotMeasured(_) => None,
        })
        .collect()
}

/// One chart per curve of the first family that has at least one measured
/// point; each family (name, curves) is one line of it, matched by file.
pub(crate) fn draw(out: &Path, families: &[(&str, &[Curve])], x: &str) -> Vec<(String, Result<()>)> {
    let Some((_, first)) = families.first() else { return Vec::new() };
    first
        .iter()
        .filter_map(|c| {
            let series: Vec<Series<'_>> = families
                .iter()
                .filter_map(|(name, curves)| {
                    let pts = points(curves.iter().find(|d| d.file == c.file)?);
                    (!pts.is_empty()).then_some(Series { name: *name, points: pts })
                })
                .collect();
            if series.is_empty() {
                return None;
            }
            let y = format!("{} ({})", c.metric, c.unit);
            let labels = Labels { title: c.metric, x, y: &y, spread: c.spread };
            let r = std::fs::create_dir_all(out)
                .map_err(anyhow::Error::from)
                .and_then(|()| chart::lines(&out.join(c.file), &labels, &series));
            Some((c.file.to_string(), r))
        })
        .collect()
}

/// One result row per point of `curves`, with no peer to compare against.
pub(crate) fn rows_without_peer(figure: &str, curves: &[Curve], case: impl Fn(usize) -> String) -> Vec<Row> {
    let mut rows = Vec::new();
    for c in curves {
        for (n, m) in &c.points {
            rows.push(Row {
                figure: figure.into(),
                case: case(*n),
                metric: c.metric.into(),
                unit: c.unit.into(),
                better: c.better,
                ours: m.clone(),
                peer_name: String::new(),
                peer_case: "no peer run".into(),
                peer: None,
                note: String::new(),
            });
        }
    }
    rows
}
