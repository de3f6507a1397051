//! SVG charts drawn on the server: a scatter plot of trace durations, line charts of metric
//! series, and a bar chart of a histogram's buckets. Each is one `<svg>` with a viewBox, so it
//! scales with the page, and `<title>` elements for what hovering shows.

use std::fmt::Write;

use super::{duration_text, utc_text};

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Escapes text for SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Round tick values covering `[low, high]`, about `count` of them.
fn ticks(low: f64, high: f64, count: usize) -> Vec<f64> {
    if high <= low || !low.is_finite() || !high.is_finite() {
        return vec![low];
    }
    let raw = (high - low) / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
    let mut tick = (low / step).ceil() * step;
    let mut out = Vec::new();
    while tick <= high + step * 1e-9 {
        out.push(tick);
        tick += step;
    }
    out
}

/// Horizontal grid lines at round values of `y_range`, labelled by `y_label`.
fn grid(out: &mut String, y_range: (f64, f64), y_label: &dyn Fn(f64) -> String) {
    for tick in ticks(y_range.0, y_range.1, 4) {
        let y = y_of(tick, y_range);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&y_label(tick))
        );
    }
}

/// The frame: axes, horizontal grid lines with labels from `y_label`, time labels along x.
fn frame(out: &mut String, x_range: (u64, u64), y_range: (f64, f64), y_label: &dyn Fn(f64) -> String) {
    let (x0, x1) = x_range;
    let plot_w = WIDTH - LEFT - RIGHT;
    grid(out, y_range, y_label);
    let span = (x1 - x0).max(1) as f64;
    for i in 0..=4 {
        let t = x0 + (span * f64::from(i) / 4.0) as u64;
        let x = LEFT + plot_w * f64::from(i) / 4.0;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let text = utc_text(t);
        // The script shows data-ms in the browser's time zone.
        let _ = write!(
            out,
            r#"<text class="tick time" x="{x:.1}" y="{}" text-anchor="{anchor}" data-ms="{}" data-format="time">{}</text>"#,
            HEIGHT - 8.0,
            t / 1_000_000,
            esc(&text[11..19])
        );
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}"/><line class="axis" x1="{LEFT}" x2="{}" y1="{}" y2="{}"/>"#,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM
    );
}

fn x_of(t: u64, x_range: (u64, u64)) -> f64 {
    let span = (x_range.1 - x_range.0).max(1) as f64;
    LEFT + (t.saturating_sub(x_range.0) as f64 / span).min(1.0) * (WIDTH - LEFT - RIGHT)
}

fn y_of(v: f64, y_range: (f64, f64)) -> f64 {
    let span = (y_range.1 - y_range.0).max(f64::MIN_POSITIVE);
    TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - ((v - y_range.0) / span).clamp(0.0, 1.0))
}

/// One point of the trace scatter plot.
pub struct TracePoint {
    pub start: u64,
    pub duration: u64,
    pub href: String,
    pub title: String,
    pub error: bool,
}

/// Trace durations over time; each point links to its trace.
pub fn scatter(points: &[TracePoint], x_range: (u64, u64)) -> String {
    let top = points.iter().map(|p| p.duration).max().unwrap_or(1).max(1) as f64 * 1.1;
    let y_range = (0.0, top);
    let mut out = format!(
        r#"<svg class="chart scatter" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="trace durations over time">"#
    );
    frame(&mut out, x_range, y_range, &|v| duration_text(v as u64));
    for p in points {
        let _ = write!(
            out,
            r#"<a href="{}"><circle class="point{}" cx="{:.1}" cy="{:.1}" r="5"><title>{}</title></circle></a>"#,
            esc(&p.href),
            if p.error { " failed" } else { "" },
            x_of(p.start, x_range),
            y_of(p.duration as f64, y_range),
            esc(&p.title)
        );
    }
    out.push_str("</svg>");
    out
}

/// One line of a line chart.
pub struct Line {
    pub label: String,
    pub color: String,
    pub points: Vec<(u64, f64)>,
}

/// Lines over time, with the value axis from `format`.
pub fn lines(series: &[Line], x_range: (u64, u64), format: &dyn Fn(f64) -> String) -> String {
    let finite = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| v.is_finite());
    let (mut low, mut high) =
        finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !low.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    if low > 0.0 {
        low = 0.0;
    }
    if high <= low {
        high = low + 1.0;
    }
    let y_range = (low, high + (high - low) * 0.05);
    let mut out = format!(
        r#"<svg class="chart lines" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="values over time">"#
    );
    frame(&mut out, x_range, y_range, format);
    for line in series {
        let mut path = String::new();
        let mut pen_down = false;
        for (t, v) in &line.points {
            if !v.is_finite() {
                pen_down = false;
                continue;
            }
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if pen_down { "L" } else { "M" },
                x_of(*t, x_range),
                y_of(*v, y_range)
            );
            pen_down = true;
        }
        let _ = write!(
            out,
            r#"<g class="series" data-series="{}"><path d="{path}" stroke="{}" fill="none"><title>{}</title></path>"#,
            esc(&line.label),
            esc(&line.color),
            esc(&line.label)
        );
        for (t, v) in line.points.iter().filter(|(_, v)| v.is_finite()) {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"><title>{} · {} · {}</title></circle>"#,
                x_of(*t, x_range),
                y_of(*v, y_range),
                esc(&line.color),
                esc(&line.label),
                esc(&utc_text(*t)),
                esc(&format(*v))
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// Bars, one per bucket, labelled below.
pub fn bars(buckets: &[(String, f64)]) -> String {
    let top = buckets.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let n = buckets.len().max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let width = plot_w / n;
    let mut out = format!(
        r#"<svg class="chart bars" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="bucket counts">"#
    );
    grid(&mut out, (0.0, top), &|tick| tick.to_string());
    let label_every = (buckets.len() / 12).max(1);
    for (i, (label, count)) in buckets.iter().enumerate() {
        let x = LEFT + width * i as f64;
        let y = y_of(*count, (0.0, top));
        let _ = write!(
            out,
            r#"<rect class="bar" x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}"><title>{} · {}</title></rect>"#,
            x + 1.0,
            (width - 2.0).max(1.0),
            (HEIGHT - BOTTOM - y).max(0.0),
            esc(label),
            count
        );
        if i % label_every == 0 {
            let _ = write!(
                out,
                r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + width / 2.0,
                HEIGHT - 8.0,
                esc(label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 100.0, 4), [0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(ticks(0.0, 1.0, 4), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(ticks(5.0, 5.0, 4), [5.0]);
    }

    #[test]
    fn text_in_charts_is_escaped() {
        let svg = bars(&[("<script>".into(), 1.0)]);
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
    }
}
