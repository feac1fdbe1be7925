//! PNG line charts of one curve each (the scale family): the median per x as
//! a line with points, the min–max over repetitions (or members) as an error
//! bar. Text is drawn with a TTF font read at run time, so the bench links no
//! system font library.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Fonts tried in order when `CHART_FONT` is not set (Debian's DejaVu first).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the font once; later calls return the first call's result.
fn font() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let candidates: Vec<String> = match std::env::var("CHART_FONT") {
            Ok(p) => vec![p],
            Err(_) => FONTS.iter().map(|s| s.to_string()).collect(),
        };
        let path = candidates
            .iter()
            .find(|p| Path::new(p).is_file())
            .ok_or_else(|| format!("no TTF font found (tried {candidates:?}); set CHART_FONT"))?;
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        // plotters keeps fonts for the life of the program.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a font plotters can read"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One point of a curve: x, the median, and the spread around it.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub x: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Axis labels and title of a chart.
pub struct Labels<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
    /// What the error bars span, said under the title.
    pub spread: &'a str,
}

/// One named curve of a chart.
pub struct Series<'a> {
    /// Its name in the legend (no legend when the chart has one unnamed curve).
    pub name: &'a str,
    pub points: Vec<Point>,
}

/// Colours of the curves, in order.
const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 94, 168), RGBColor(200, 82, 0), RGBColor(40, 140, 60), RGBColor(120, 60, 160)];

/// Draws every series as one curve into `path` (PNG, 800×500), with a legend
/// when there is more than one.
pub fn lines(path: &Path, labels: &Labels<'_>, series: &[Series<'_>]) -> Result<()> {
    font()?;
    if series.iter().all(|s| s.points.is_empty()) {
        bail!("{}: no point to draw", path.display());
    }
    let sorted: Vec<(&str, Vec<Point>)> = series
        .iter()
        .map(|s| {
            let mut pts = s.points.clone();
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            (s.name, pts)
        })
        .collect();
    let all = || sorted.iter().flat_map(|(_, p)| p.iter());
    let x_max = all().map(|p| p.x).fold(0.0, f64::max) * 1.08 + 1.0;
    let y_top = all().map(|p| p.max.max(p.median)).filter(|y| y.is_finite()).fold(0.0, f64::max);
    let y_max = if y_top > 0.0 { y_top * 1.15 } else { 1.0 };
    let legend = sorted.len() > 1;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(labels.title, ("sans-serif", 22))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(16)
            .caption(labels.spread, ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)))
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc(labels.x)
            .y_desc(labels.y)
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 14))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| axis(*y, y_max))
            .draw()?;
        for (i, (name, pts)) in sorted.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let drawn = chart
                .draw_series(LineSeries::new(pts.iter().map(|p| (p.x, p.median)), colour.stroke_width(2)))?;
            if legend {
                drawn.label(*name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
            chart.draw_series(pts.iter().map(|p| Circle::new((p.x, p.median), 4, colour.filled())))?;
            chart.draw_series(
                pts.iter()
                    .filter(|p| p.max > p.min)
                    .map(|p| ErrorBar::new_vertical(p.x, p.min, p.median, p.max, colour.stroke_width(1), 8)),
            )?;
            // Each median written beside its point, up and to the right of the marker.
            chart.draw_series(pts.iter().map(|p| {
                EmptyElement::at((p.x, p.median))
                    + Text::new(short(p.median), (7, -18), ("sans-serif", 13).into_font().color(&BLACK))
            }))?;
        }
        if legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("{e}")).with_context(|| format!("drawing {}", path.display()))
}

/// An axis label: as many decimals as the axis's range needs, the same for every tick.
fn axis(y: f64, top: f64) -> String {
    if top >= 50.0 {
        format!("{y:.0}")
    } else if top >= 5.0 {
        format!("{y:.1}")
    } else if top >= 0.5 {
        format!("{y:.2}")
    } else {
        format!("{y:.3}")
    }
}

/// A number as a point label: few digits, no trailing noise.
fn short(y: f64) -> String {
    let a = y.abs();
    if a >= 1000.0 {
        format!("{y:.0}")
    } else if a >= 10.0 {
        format!("{y:.1}")
    } else if a >= 1.0 {
        format!("{y:.2}")
    } else {
        format!("{y:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::{axis, short};

    #[test]
    fn axis_labels_share_one_precision_chosen_by_the_range() {
        assert_eq!(axis(500.0, 4000.0), "500");
        assert_eq!(axis(0.0, 4000.0), "0");
        assert_eq!(axis(2.5, 30.0), "2.5");
        assert_eq!(axis(0.1, 0.6), "0.10");
        assert_eq!(short(3904.4), "3904");
        assert_eq!(short(0.4851), "0.485");
    }
}
