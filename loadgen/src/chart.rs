//! The SVG charts of `loadgen compare`, drawn with plotters' SVG backend only.
//!
//! No bitmap backend and no font crate: plotters then measures text with a
//! rough built-in estimate and writes `<text font-family="sans-serif">`
//! elements; the browser that shows the SVG picks the font. So the charts
//! build on a machine with no fontconfig and no system fonts at all.
//!
//! One chart per figure and load (`size`, `work`): x is the number of
//! connections on a log axis (1 to 10,000), one line per server.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One server's line: (connections, value) points, in any order.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Distinct colours that stay readable on white (Okabe-Ito palette, two
/// greys, and darker shades for the rows beyond it), one per server in
/// table order. Black is kept for the reference row.
const COLORS: [RGBColor; 14] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(180, 40, 40),
    RGBColor(100, 60, 160),
    RGBColor(0, 80, 60),
    RGBColor(160, 110, 40),
    RGBColor(40, 40, 120),
    RGBColor(190, 190, 60),
    RGBColor(200, 60, 120),
];

/// Series whose name starts with this are drawn in black and thicker:
/// the reference every other line is read against.
const REFERENCE_PREFIX: &str = "practical limit";

/// Draw `series` into an SVG file at `path`. `log_y` for latencies, which
/// span microseconds to seconds.
pub fn line_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let pts = || series.iter().flat_map(|s| s.points.iter().copied());
    let (xmin, xmax) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let (ymin, ymax) = pts()
        .filter(|(_, y)| y.is_finite() && (*y > 0.0 || !log_y))
        .fold((f64::MAX, f64::MIN), |(a, b), (_, y)| (a.min(y), b.max(y)));
    if xmin > xmax || ymin > ymax {
        return Err(anyhow!("{title}: nothing to draw"));
    }
    // Pad the ranges so single points and the legend fit.
    let x_range = (xmin / 1.5).max(0.5)..xmax * 1.5;
    let root = SVGBackend::new(path, (860, 500)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80);
    let color = |i: usize| COLORS[i % COLORS.len()];

    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("connections (log scale)")
                .y_desc(y_desc)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| short(*v))
                .draw()
                .map_err(|e| err(&e))?;
            for (i, s) in series.iter().enumerate() {
                let mut points: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(_, y)| y.is_finite() && (*y > 0.0 || !log_y))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let reference = s.name.starts_with(REFERENCE_PREFIX);
                let (c, w) = if reference { (BLACK, 3) } else { (color(i), 2) };
                chart
                    .draw_series(LineSeries::new(points.clone(), c.stroke_width(w)))
                    .map_err(|e| err(&e))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(w))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(|e| err(&e))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }

    if log_y {
        let y = (ymin / 2.0)..(ymax * 4.0);
        draw!(
            builder
                .build_cartesian_2d(x_range.log_scale(), y.log_scale())
                .map_err(|e| err(&e))?
        );
    } else {
        let y = 0.0..(ymax * 1.25).max(1e-9);
        draw!(
            builder
                .build_cartesian_2d(x_range.log_scale(), y)
                .map_err(|e| err(&e))?
        );
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Axis labels: 1.2k, 3.4M, 0.5.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_lines_and_text_without_fonts() {
        let dir = std::env::temp_dir().join(format!("loadgen-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.svg");
        let series = vec![
            Series {
                name: "alpha".into(),
                points: vec![(1.0, 100.0), (100.0, 5000.0), (10000.0, 3000.0)],
            },
            Series {
                name: "beta".into(),
                points: vec![(1.0, 80.0)],
            },
        ];
        line_chart(&path, "throughput", "requests/s", &series, false).unwrap();
        line_chart(&dir.join("l.svg"), "p99", "µs", &series, true).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<text") && svg.contains("alpha") && svg.contains("beta"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
        assert!(line_chart(&path, "empty", "x", &[], false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
