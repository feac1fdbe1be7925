//! The results: rows of ours against a peer, written as markdown and JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::stats::Summary;

/// Which direction is better for a metric.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// A measured figure, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measured {
    Value(Summary),
    NotMeasured(String),
}

impl Measured {
    pub fn from_samples(samples: &[f64], what: &str) -> Measured {
        match Summary::of(samples) {
            Some(s) => Measured::Value(s),
            None => Measured::NotMeasured(format!("no successful sample of {what}")),
        }
    }

    fn median(&self) -> Option<f64> {
        match self {
            Measured::Value(s) => Some(s.median),
            Measured::NotMeasured(_) => None,
        }
    }

    fn cell(&self, unit: &str) -> String {
        match self {
            Measured::Value(s) => {
                format!("{} ({}–{}) {unit}", fmt_num(s.median), fmt_num(s.min), fmt_num(s.max))
            }
            Measured::NotMeasured(why) => format!("not measured: {why}"),
        }
    }
}

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{:.0}", x)
    } else if a >= 10.0 {
        format!("{:.1}", x)
    } else if a >= 1.0 {
        format!("{:.2}", x)
    } else {
        format!("{:.3}", x)
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: String,
    pub case: String,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub ours: Measured,
    pub peer_name: String,
    pub peer_case: String,
    pub peer: Option<Measured>,
    pub note: String,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        let o = self.ours.median()?;
        let p = self.peer.as_ref()?.median()?;
        (p != 0.0).then(|| o / p)
    }
}

/// Everything a run writes.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub started: String,
    pub finished: String,
    pub machine: serde_json::Value,
    pub versions: serde_json::Value,
    pub settings: Vec<String>,
    pub commands: Vec<String>,
    pub rows: Vec<Row>,
    /// Sections of their own after the main table: (title, markdown body).
    pub sections: Vec<(String, String)>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("results.json"), json + "\n")?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Carbon Grid Cluster vs etcd and serf\n");
        let _ = writeln!(md, "Run {} → {}. Produced by `bash bench/run.sh`.\n", self.started, self.finished);
        let _ = writeln!(md, "Machine: `{}`\n", self.machine);
        let _ = writeln!(md, "Versions: `{}`\n", self.versions);
        let _ = writeln!(
            md,
            "Each cell: median (min–max) over repetitions. Ratio = ours / peer (medians); \
             the last column says which direction is better.\n"
        );
        let _ = writeln!(
            md,
            "| figure | case | metric | ours | peer | peer case | peer value | ours/peer | better |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for r in &self.rows {
            let peer = r.peer.as_ref().map_or_else(|| "—".to_string(), |p| p.cell(&r.unit));
            let ratio = r.ratio().map_or_else(|| "—".to_string(), |x| format!("{x:.2}"));
            let better = match r.better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.figure,
                r.case,
                r.metric,
                r.ours.cell(&r.unit),
                if r.peer.is_some() { r.peer_name.as_str() } else { "—" },
                r.peer_case,
                peer,
                ratio,
                better
            );
        }
        let notes: Vec<&Row> = self.rows.iter().filter(|r| !r.note.is_empty()).collect();
        if !notes.is_empty() {
            let _ = writeln!(md, "\n## Notes on rows\n");
            for r in notes {
                let _ = writeln!(md, "- {} / {} / {}: {}", r.figure, r.case, r.metric, r.note);
            }
        }
        for (title, body) in &self.sections {
            let _ = writeln!(md, "\n## {title}\n\n{body}");
        }
        let _ = writeln!(md, "\n## Settings\n");
        for s in &self.settings {
            let _ = writeln!(md, "- {s}");
        }
        if !self.problems.is_empty() {
            let _ = writeln!(md, "\n## Not measured / problems\n");
            for p in &self.problems {
                let _ = writeln!(md, "- {p}");
            }
        }
        let _ = writeln!(md, "\n## Commands\n");
        for c in &self.commands {
            let _ = writeln!(md, "- `{c}`");
        }
        md
    }
}
