//! The cluster figures against the cluster's size, one small chart per
//! figure and one line per system, as an SVG written beside the CSVs (no
//! plotting library: a few lines and labels).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::report::Summary;

/// One chart: title, metric key, scale (divide by), unit after scaling.
const CHARTS: &[(&str, &str, f64, &str)] = &[
    ("Join: every agent sees all", "join_all_ms", 1000.0, "s"),
    ("Propagation p99 (polled)", "prop_poll_p99_ms", 1000.0, "s"),
    ("Failure detection p50", "detect_p50_ms", 1000.0, "s"),
    (
        "Failure detection: last agent",
        "detect_max_ms",
        1000.0,
        "s",
    ),
    (
        "Idle CPU per agent",
        "idle_cpu_mean_pct",
        1.0,
        "% of a core",
    ),
    (
        "RssAnon per agent (median)",
        "rss_anon_median_kib",
        1024.0,
        "MiB",
    ),
    (
        "Idle traffic: median agent",
        "agent_bytes_median",
        1000.0,
        "kB/s",
    ),
    (
        "Idle traffic: busiest agent",
        "agent_bytes_max",
        1000.0,
        "kB/s",
    ),
];

const COLUMNS: usize = 4;
const WIDTH: f64 = 250.0;
const HEIGHT: f64 = 190.0;
/// Inside a chart: left margin (y labels), top (title), bottom (x labels).
const LEFT: f64 = 46.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 30.0;
const RIGHT: f64 = 12.0;
const LEGEND: f64 = 28.0;

/// Lines in the systems' order of appearance in the CSV's sort (the
/// summary is a map: by name), colour-blind-safe colours.
const COLOURS: &[&str] = &["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00"];

/// The SVG, or `None` when the summary holds fewer than two sizes (no
/// curve to draw).
pub fn scaling_svg(summary: &Summary) -> Option<String> {
    let sizes: BTreeSet<usize> = summary.keys().map(|(_, n, _)| *n).collect();
    let systems: BTreeSet<&str> = summary.keys().map(|(s, _, _)| s.as_str()).collect();
    if sizes.len() < 2 {
        return None;
    }
    let (n_min, n_max) = (*sizes.first()? as f64, *sizes.last()? as f64);
    let x_of =
        |n: f64| LEFT + (n.ln() - n_min.ln()) / (n_max.ln() - n_min.ln()) * (WIDTH - LEFT - RIGHT);
    let rows = CHARTS.len().div_ceil(COLUMNS);
    let total_w = WIDTH * COLUMNS as f64;
    let total_h = HEIGHT * rows as f64 + LEGEND;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" viewBox="0 0 {total_w} {total_h}" font-family="sans-serif" font-size="10">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (index, (title, metric, scale, unit)) in CHARTS.iter().enumerate() {
        let x0 = WIDTH * (index % COLUMNS) as f64;
        let y0 = LEGEND + HEIGHT * (index / COLUMNS) as f64;
        let lines: BTreeMap<&str, Vec<(f64, f64)>> = systems
            .iter()
            .map(|system| {
                let points = sizes
                    .iter()
                    .filter_map(|&n| {
                        summary
                            .get(&(system.to_string(), n, metric.to_string()))
                            .filter(|v| v.is_finite())
                            .map(|v| (n as f64, v / scale))
                    })
                    .collect();
                (*system, points)
            })
            .collect();
        let top = lines
            .values()
            .flatten()
            .map(|&(_, v)| v)
            .fold(0.0_f64, f64::max);
        let top = nice_ceiling(top);
        let plot_h = HEIGHT - TOP - BOTTOM;
        let y_of = |v: f64| y0 + TOP + plot_h - v / top * plot_h;
        let _ = writeln!(svg, r#"<g transform="translate({x0},0)">"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-weight="bold">{title} ({unit})</text>"#,
            LEFT - 30.0,
            y0 + 14.0
        );
        // Axes, and the y axis's 0, middle and top.
        let (left, right, bottom) = (LEFT, WIDTH - RIGHT, y0 + TOP + plot_h);
        let _ = writeln!(
            svg,
            r##"<path d="M{left},{} V{bottom} H{right}" fill="none" stroke="#444"/>"##,
            y0 + TOP
        );
        for fraction in [0.0, 0.5, 1.0] {
            let value = top * fraction;
            let y = y_of(value);
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" x2="{right}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                left - 4.0,
                y + 3.0,
                short(value)
            );
        }
        for &n in &sizes {
            let x = x_of(n as f64);
            let _ = writeln!(
                svg,
                r##"<line x1="{x}" x2="{x}" y1="{bottom}" y2="{}" stroke="#444"/><text x="{x}" y="{}" text-anchor="middle">{n}</text>"##,
                bottom + 3.0,
                bottom + 14.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">agents</text>"#,
            (left + right) / 2.0,
            bottom + 26.0
        );
        for (system_index, (_, points)) in lines.iter().enumerate() {
            let colour = COLOURS[system_index % COLOURS.len()];
            let path: Vec<String> = points
                .iter()
                .map(|&(n, v)| format!("{:.1},{:.1}", x_of(n), y_of(v)))
                .collect();
            if path.len() > 1 {
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
                    path.join(" ")
                );
            }
            for &(n, v) in points {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                    x_of(n),
                    y_of(v)
                );
            }
        }
        let _ = writeln!(svg, "</g>");
    }
    for (system_index, system) in systems.iter().enumerate() {
        let colour = COLOURS[system_index % COLOURS.len()];
        let x = 10.0 + 170.0 * system_index as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="9" width="14" height="4" fill="{colour}"/><text x="{}" y="15">{system}</text>"#,
            x + 18.0
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for
/// nothing above 0).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|&ceiling| ceiling >= value * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// An axis label: few digits.
fn short(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value >= 10.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(17.0), 20.0);
        assert_eq!(nice_ceiling(0.061), 0.1);
        assert_eq!(nice_ceiling(7200.0), 10000.0);
    }

    #[test]
    fn one_line_per_system_and_a_point_per_size_that_has_the_figure() {
        let mut summary = Summary::new();
        for (system, n, ms) in [
            ("serf", 10, 4000.0),
            ("serf", 100, 6000.0),
            ("shoal", 10, 3000.0),
            ("shoal", 100, 5000.0),
            ("shoal", 1000, 8000.0),
        ] {
            summary.insert((system.into(), n, "detect_p50_ms".into()), ms);
        }
        let svg = scaling_svg(&summary).expect("three sizes");
        // One polyline per system in the detection chart only.
        assert_eq!(svg.matches("<polyline").count(), 2);
        // A point per (system, size) with a value: 2 + 3.
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains(">serf<") && svg.contains(">shoal<"));
        assert!(svg.contains(">1000<"), "the largest size is on the x axis");

        let mut one_size = Summary::new();
        one_size.insert(("shoal".into(), 10, "detect_p50_ms".into()), 1.0);
        assert!(scaling_svg(&one_size).is_none());
    }
}
