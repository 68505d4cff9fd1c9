//! Renders a scaler timeline (from the simulator or, later, the monitor) as CSV for tools and as
//! a self-contained SVG line plot for people. Hand-written SVG keeps this free of plotting crates.

use std::fmt::Write as _;

use super::simulate::SimReport;

/// `seconds,load_percent,instances`, one row per timeline entry.
pub fn timeline_csv(report: &SimReport) -> String {
    let mut out = String::from("seconds,load_percent,instances\n");
    for (t, load, n) in &report.timeline {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{},{load:.2},{n}", t.as_secs_f64());
    }
    out
}

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A line plot of per-instance load (left axis, 0–100 %) and instance count (right axis) over
/// time, with axes, tick labels, a title and a legend.
pub fn timeline_svg(report: &SimReport, title: &str) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let t_max = report
        .timeline
        .last()
        .map_or(1.0, |(t, _, _)| t.as_secs_f64())
        .max(1.0);
    let n_max = report
        .timeline
        .iter()
        .map(|(_, _, n)| *n)
        .max()
        .unwrap_or(0)
        .max(1);
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let y_load = |l: f64| TOP + plot_h - l.clamp(0.0, 100.0) / 100.0 * plot_h;
    let y_n = |n: u32| TOP + plot_h - f64::from(n) / f64::from(n_max) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Axes: x at the bottom, load on the left, instances on the right.
    let (x0, x1, y0, y1) = (LEFT, LEFT + plot_w, TOP, TOP + plot_h);
    let _ = writeln!(
        svg,
        r#"<path d="M{x0} {y0} L{x0} {y1} L{x1} {y1} L{x1} {y0}" fill="none" stroke="black"/>"#
    );
    for i in 0..=5 {
        let frac = f64::from(i) / 5.0;
        let t = frac * t_max;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}</text>"#,
            x(t),
            y1 + 18.0
        );
        let load = frac * 100.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{load:.0}</text>"#,
            x0 - 6.0,
            y_load(load) + 4.0
        );
    }
    let n_step = n_max.div_ceil(5).max(1);
    let mut n = 0;
    while n <= n_max {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="start">{n}</text>"#,
            x1 + 6.0,
            y_n(n) + 4.0
        );
        n += n_step;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="15" y="{:.1}" text-anchor="middle" transform="rotate(-90 15 {:.1})">load per instance (%)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" transform="rotate(90 {:.1} {:.1})">instances</text>"#,
        WIDTH - 15.0,
        TOP + plot_h / 2.0,
        WIDTH - 15.0,
        TOP + plot_h / 2.0
    );

    let load_points: Vec<String> = report
        .timeline
        .iter()
        .map(|(t, l, _)| format!("{:.1},{:.1}", x(t.as_secs_f64()), y_load(*l)))
        .collect();
    // The instance count is a step function: draw it as one.
    let mut n_points = Vec::new();
    let mut prev: Option<u32> = None;
    for (t, _, n) in &report.timeline {
        let px = x(t.as_secs_f64());
        if let Some(p) = prev.filter(|p| p != n) {
            n_points.push(format!("{px:.1},{:.1}", y_n(p)));
        }
        n_points.push(format!("{px:.1},{:.1}", y_n(*n)));
        prev = Some(*n);
    }
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##,
        load_points.join(" ")
    );
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#ff7f0e" stroke-width="2"/>"##,
        n_points.join(" ")
    );
    // Legend.
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#1f77b4">— load per instance (%)</text>"##,
        x0 + 10.0,
        y0 + 16.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#ff7f0e">— instances</text>"##,
        x0 + 10.0,
        y0 + 32.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
