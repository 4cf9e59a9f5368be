//! SVG charts of sweep results (plotters, SVG backend only).

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

type Rows<'a> = &'a [(Report, f64)];

/// Draws named series of `(x, y)` points as lines with markers.
fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    series: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x_max, mut y_max) = (1.0f64, 0.1f64);
    let mut x_min = f64::MAX;
    for &(x, y) in points {
        x_max = x_max.max(x);
        x_min = x_min.min(x);
        y_max = y_max.max(y);
    }
    let x_of = |x: f64| if log_x { x.log10() } else { x };
    let (x_lo, x_hi) = (x_of(x_min.min(x_max)), x_of(x_max));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(x_lo..x_hi + (x_hi - x_lo) * 0.05 + 1e-9, 0.0..y_max * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(if log_x {
            format!("{x_label} (log10)")
        } else {
            x_label.to_string()
        })
        .y_desc(y_label)
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK];
    for (index, (name, data)) in series.iter().enumerate() {
        let color = colors[index % colors.len()];
        let data: Vec<(f64, f64)> = data.iter().map(|&(x, y)| (x_of(x), y)).collect();
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart.draw_series(data.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn series(
    rows: Rows,
    x: impl Fn(&Report) -> f64,
    y: impl Fn(&Report) -> Option<f64>,
) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|(report, _)| y(report).map(|value| (x(report), value)))
        .collect()
}

/// Dissemination percentiles and detection delays against cluster size.
pub fn size_chart(rows: Rows, path: &Path) -> anyhow::Result<()> {
    let n = |r: &Report| r.nodes as f64;
    lines(
        path,
        "State change dissemination and crash detection vs cluster size",
        "nodes",
        "seconds",
        true,
        &[
            (
                "dissemination 50%",
                series(rows, n, |r| r.mean_dissemination(|d| d.p50)),
            ),
            (
                "dissemination 99%",
                series(rows, n, |r| r.mean_dissemination(|d| d.p99)),
            ),
            (
                "dissemination 99.9%",
                series(rows, n, |r| r.mean_dissemination(|d| d.p999)),
            ),
            (
                "detection, first observer",
                series(rows, n, |r| r.mean_detection(|d| d.first)),
            ),
            (
                "detection, all observers",
                series(rows, n, |r| r.mean_detection(|d| d.all)),
            ),
        ],
    )
}

/// Detection delay and false positives against packet loss (N = 100).
pub fn loss_chart(rows: Rows, path: &Path) -> anyhow::Result<()> {
    let loss = |r: &Report| r.loss * 100.0;
    lines(
        path,
        "N = 100: detection and dissemination vs packet loss",
        "loss %",
        "seconds / count",
        false,
        &[
            (
                "dissemination 99% (s)",
                series(rows, loss, |r| r.mean_dissemination(|d| d.p99)),
            ),
            (
                "detection, first observer (s)",
                series(rows, loss, |r| r.mean_detection(|d| d.first)),
            ),
            (
                "false positives (count)",
                series(rows, loss, |r| Some(r.false_positives as f64)),
            ),
            (
                "refutations / 100",
                series(rows, loss, |r| Some(r.refutations as f64 / 100.0)),
            ),
        ],
    )
}

/// False positives caused by a slow node, per seed, with and without local
/// health awareness.
pub fn slow_chart(rows: Rows, path: &Path) -> anyhow::Result<()> {
    let seed = |r: &Report| r.seed as f64;
    let pick =
        |on: bool| move |r: &Report| (r.local_health == on).then_some(r.false_positives as f64);
    lines(
        path,
        "Slow node (30 nodes, 600 s): healthy nodes declared down",
        "seed",
        "false positives",
        false,
        &[
            ("local health on", series(rows, seed, pick(true))),
            ("local health off", series(rows, seed, pick(false))),
        ],
    )
}
