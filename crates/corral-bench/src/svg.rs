//! Hand-written SVG plots: a handful of lines and axes do not need a plotting
//! library (and its dependency tree).

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 64.0; // left margin
const B: f64 = 48.0; // bottom margin
const T: f64 = 32.0; // top margin
const R: f64 = 24.0; // right margin
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

/// One line of a CDF: its label, the ready times (ms, any order) and how many
/// attempts there were (failures keep the curve below 1).
pub struct CdfSeries {
    pub label: String,
    pub values_ms: Vec<f64>,
    pub attempts: usize,
}

/// A "nice" axis maximum and tick step for `max`.
fn ticks(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let mag = 10f64.powf(max.log10().floor());
    let step = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| max / s <= 8.0).unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn frame(out: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
"#,
        W / 2.0, esc(title), L + (W - L - R) / 2.0, H - 10.0, esc(x_label), (H - B + T) / 2.0, (H - B + T) / 2.0, esc(y_label)
    );
}

fn axes(out: &mut String, x_max: f64, x_step: f64, y_max: f64, y_step: f64, y_fmt: impl Fn(f64) -> String) {
    let (pw, ph) = (W - L - R, H - T - B);
    let mut x = 0.0;
    while x <= x_max + x_step / 2.0 {
        let px = L + x / x_max * pw;
        let _ = writeln!(out, r##"<line x1="{px:.1}" y1="{T}" x2="{px:.1}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##, H - B, H - B + 16.0, fmt_num(x));
        x += x_step;
    }
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let py = H - B - y / y_max * ph;
        let _ = writeln!(out, r##"<line x1="{L}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##, W - R, L - 6.0, py + 4.0, y_fmt(y));
        y += y_step;
    }
    let _ = writeln!(out, r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
}

fn fmt_num(v: f64) -> String {
    if v >= 1000.0 && v % 1000.0 == 0.0 { format!("{}k", v / 1000.0) } else { format!("{v}") }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Fraction of attempts ready by each time, one step line per series.
pub fn tti_cdf(title: &str, series: &[CdfSeries]) -> String {
    let x_raw = series.iter().flat_map(|s| s.values_ms.iter().copied()).fold(0.0, f64::max);
    let (x_max, x_step) = ticks(x_raw);
    let mut out = String::new();
    frame(&mut out, title, "time to interactive (ms)", "share of attempts ready");
    axes(&mut out, x_max, x_step, 1.0, 0.2, |y| format!("{:.0}%", y * 100.0));
    let (pw, ph) = (W - L - R, H - T - B);
    for (k, s) in series.iter().enumerate() {
        let mut v = s.values_ms.clone();
        v.sort_by(f64::total_cmp);
        let n = s.attempts.max(1) as f64;
        let mut pts = format!("{L:.1},{:.1}", H - B);
        for (i, x) in v.iter().enumerate() {
            let px = L + x / x_max * pw;
            let (y0, y1) = (H - B - i as f64 / n * ph, H - B - (i + 1) as f64 / n * ph);
            let _ = write!(pts, " {px:.1},{y0:.1} {px:.1},{y1:.1}");
        }
        let color = COLORS[k % COLORS.len()];
        let _ = writeln!(out, r#"<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>"#);
        let ly = T + 16.0 + k as f64 * 16.0;
        let _ = writeln!(out, r#"<rect x="{}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{ly:.1}">{}</text>"#, W - R - 180.0, ly - 4.0, W - R - 162.0, esc(&s.label));
    }
    out.push_str("</svg>\n");
    out
}

/// Live sandboxes over time.
pub fn timeline(title: &str, live: &[u32], step_ms: f64) -> String {
    let x_raw = live.len().saturating_sub(1) as f64 * step_ms;
    let (x_max, x_step) = ticks(x_raw);
    let (y_max, y_step) = ticks(live.iter().copied().max().unwrap_or(0) as f64);
    let mut out = String::new();
    frame(&mut out, title, "time since release (ms)", "live sandboxes");
    axes(&mut out, x_max, x_step, y_max, y_step, fmt_num);
    let (pw, ph) = (W - L - R, H - T - B);
    let pts: Vec<String> = live
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", L + i as f64 * step_ms / x_max * pw, H - B - v as f64 / y_max * ph))
        .collect();
    let _ = writeln!(out, r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##, pts.join(" "));
    out.push_str("</svg>\n");
    out
}
