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
pub(super) fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Most ticks one axis carries, whatever the values.
const MAX_TICKS: usize = 12;
/// Most bars one bar chart draws: more buckets are merged, neighbours together.
pub const MAX_BARS: usize = 200;

/// The distance from `x` to the next representable value away from zero: a step below it
/// would leave a running sum where it was.
fn ulp(x: f64) -> f64 {
    let x = x.abs();
    if !x.is_finite() {
        return f64::MAX;
    }
    f64::from_bits(x.to_bits() + 1) - x
}

/// Round tick values covering `[low, high]`, about `count` of them, at most [`MAX_TICKS`],
/// each finite and each larger than the one before. Total: any pair of values (NaN, the
/// infinities, adjacent values at any scale) gives a bounded answer.
fn ticks(low: f64, high: f64, count: usize) -> Vec<f64> {
    if !low.is_finite() || !high.is_finite() {
        return vec![if low.is_finite() { low } else { 0.0 }];
    }
    if high <= low {
        return vec![low];
    }
    // Halves first: high - low itself overflows for values of opposite sign near f64::MAX.
    let raw = (high / 2.0 - low / 2.0) / count.max(1) as f64 * 2.0;
    if !raw.is_finite() || raw <= 0.0 {
        return vec![low, high];
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw)
        .max(ulp(low).max(ulp(high)));
    let first = (low / step).ceil() * step;
    let mut out: Vec<f64> = Vec::with_capacity(MAX_TICKS);
    for i in 0..MAX_TICKS {
        // Each tick from the first, not from the one before: no error piles up.
        let tick = first + step * i as f64;
        if !tick.is_finite() || tick > high + step * 1e-9 {
            break;
        }
        if out.last().is_none_or(|last| tick > *last) {
            out.push(tick);
        }
    }
    if out.is_empty() {
        out.push(low);
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
    let span = x1.saturating_sub(x0).max(1) as f64;
    for i in 0..=4 {
        let t = x0.saturating_add((span * f64::from(i) / 4.0) as u64);
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
    let span = x_range.1.saturating_sub(x_range.0).max(1) as f64;
    LEFT + (t.saturating_sub(x_range.0) as f64 / span).min(1.0) * (WIDTH - LEFT - RIGHT)
}

/// Where `v` stands between the ends of `y_range`, from 0 to 1; 0 for what has no place (NaN).
fn fraction(v: f64, y_range: (f64, f64)) -> f64 {
    // Halves: a difference of two finite values can overflow, the difference of their halves cannot.
    let span = y_range.1 / 2.0 - y_range.0 / 2.0;
    let f = (v / 2.0 - y_range.0 / 2.0) / span.max(f64::MIN_POSITIVE);
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}

fn y_of(v: f64, y_range: (f64, f64)) -> f64 {
    TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - fraction(v, y_range))
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
    // What a drag across the plot selects is read back from these (app.js): the times and
    // durations at the plot's edges, and where the edges are.
    let mut out = format!(
        r#"<svg class="chart scatter" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="trace durations over time" data-from="{}" data-to="{}" data-top="{top:.0}" data-plot="{LEFT} {TOP} {} {}">"#,
        x_range.0,
        x_range.1,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM
    );
    frame(&mut out, x_range, y_range, &|v| duration_text(v as u64));
    for p in points {
        let _ = write!(
            out,
            r#"<a href="{}"><circle class="point{}" cx="{:.1}" cy="{:.1}" r="4"><title>{}</title></circle></a>"#,
            esc(&p.href),
            if p.error { " failed" } else { "" },
            x_of(p.start, x_range),
            y_of(p.duration as f64, y_range),
            esc(&p.title)
        );
    }
    out.push_str(r#"<rect class="selection" x="0" y="0" width="0" height="0" visibility="hidden"/></svg>"#);
    out
}

/// One line of a line chart.
pub struct Line {
    pub label: String,
    pub color: String,
    pub points: Vec<(u64, f64)>,
    /// What each point's value is, where some are only bounds (empty: every one is a value).
    pub readings: Vec<Reading>,
}

/// What a drawn value says of the figure it stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reading {
    /// The figure itself, or an estimate of it.
    #[default]
    Value,
    /// The figure is above it.
    AtLeast,
    /// The figure is below it.
    AtMost,
}

impl Reading {
    /// `text` (a formatted value) as this reading says it: "> 10 s" for a lower bound.
    #[must_use]
    pub fn say(self, text: &str) -> String {
        match self {
            Reading::Value => text.to_owned(),
            Reading::AtLeast => format!("> {text}"),
            Reading::AtMost => format!("< {text}"),
        }
    }
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
        high = low + 1.0_f64.max(ulp(low));
    }
    // 5% of headroom, where the scale has room for it.
    let headroom = high + (high / 2.0 - low / 2.0) * 0.1;
    let y_range = (low, if headroom.is_finite() { headroom } else { high });
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
        for (i, (t, v)) in line.points.iter().enumerate().filter(|(_, (_, v))| v.is_finite()) {
            let reading = line.readings.get(i).copied().unwrap_or_default();
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}" data-t="{t}" data-v="{v:e}"{}><title>{} · {} · {}</title></circle>"#,
                x_of(*t, x_range),
                y_of(*v, y_range),
                esc(&line.color),
                if reading == Reading::Value { "" } else { r#" class="bound""# },
                esc(&line.label),
                esc(&utc_text(*t)),
                esc(&reading.say(&format(*v)))
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// Buckets `(label, count per layer)` merged with their neighbours into at most [`MAX_BARS`],
/// layer by layer: the merged bar's label is its first and last bucket's.
fn merge_stacked(buckets: &[(String, Vec<f64>)]) -> Vec<(String, Vec<f64>)> {
    if buckets.len() <= MAX_BARS {
        return buckets.to_vec();
    }
    let group = buckets.len().div_ceil(MAX_BARS);
    buckets
        .chunks(group)
        .map(|chunk| {
            let first = &chunk[0].0;
            let last = &chunk[chunk.len() - 1].0;
            let label = if chunk.len() == 1 { first.clone() } else { format!("{first} … {last}") };
            let layers = chunk.iter().map(|b| b.1.len()).max().unwrap_or(0);
            let sums = (0..layers)
                .map(|l| chunk.iter().filter_map(|b| b.1.get(l)).filter(|c| c.is_finite()).sum())
                .collect();
            (label, sums)
        })
        .collect()
}

/// A small line of values over time without axes, for a table cell: its highest value sets the
/// height; `label` says what it shows.
pub fn sparkline(points: &[(u64, f64)], x_range: (u64, u64), label: &str) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let high = points.iter().map(|p| p.1).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let span = x_range.1.saturating_sub(x_range.0).max(1) as f64;
    let mut path = String::new();
    // A step without a value (no requests, so no error rate) breaks the line.
    let mut gap = true;
    for (t, v) in points {
        if !v.is_finite() {
            gap = true;
            continue;
        }
        let x = (t.saturating_sub(x_range.0) as f64 / span).min(1.0) * W;
        let y = if high > 0.0 { H - 1.0 - (v / high).clamp(0.0, 1.0) * (H - 2.0) } else { H - 1.0 };
        // Each run starts with a dot (a short stroke, round-capped), so that a step alone
        // between gaps still shows.
        let _ =
            write!(path, "{}{x:.1},{y:.1} {}", if gap { "M" } else { "L" }, if gap { "h0.1 " } else { "" });
        gap = false;
    }
    format!(
        r#"<svg class="sparkline" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}"><title>{}</title><path d="{path}" fill="none"/></svg>"#,
        esc(label),
        esc(label)
    )
}

/// Bars, one per bucket (at most [`MAX_BARS`], see [`merge_stacked`]), labelled below.
pub fn bars(buckets: &[(String, f64)]) -> String {
    let stacked: Vec<(String, Vec<f64>)> = buckets.iter().map(|(l, c)| (l.clone(), vec![*c])).collect();
    stacked_bars(&stacked, &[("", "")], "bucket counts")
}

/// Bars, one per bucket (at most [`MAX_BARS`], see [`merge_stacked`]), each
/// a stack of its layers' counts from the bottom up; `layers` gives each layer's class and name,
/// `label` says what the chart shows.
pub fn stacked_bars(buckets: &[(String, Vec<f64>)], layers: &[(&str, &str)], label: &str) -> String {
    let buckets = merge_stacked(buckets);
    let total = |counts: &[f64]| counts.iter().filter(|c| c.is_finite() && **c > 0.0).sum::<f64>();
    let top = buckets.iter().map(|b| total(&b.1)).fold(0.0, f64::max).max(1.0);
    let n = buckets.len().max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let width = plot_w / n;
    let mut out = format!(
        r#"<svg class="chart bars" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}">"#,
        esc(label)
    );
    grid(&mut out, (0.0, top), &|tick| tick.to_string());
    let label_every = (buckets.len() / 12).max(1);
    for (i, (bucket, counts)) in buckets.iter().enumerate() {
        let x = LEFT + width * i as f64;
        let mut below = 0.0;
        for (count, (class, name)) in counts.iter().zip(layers) {
            if !(count.is_finite() && *count > 0.0) && layers.len() > 1 {
                continue;
            }
            let count = if count.is_finite() { count.max(0.0) } else { 0.0 };
            let (y, bottom) = (y_of(below + count, (0.0, top)), y_of(below, (0.0, top)));
            below += count;
            let title = if name.is_empty() {
                format!("{} · {count}", esc(bucket))
            } else {
                format!("{} · {name}: {count}", esc(bucket))
            };
            let _ = write!(
                out,
                r#"<rect class="bar{}{}" x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}"{}><title>{title}</title></rect>"#,
                if class.is_empty() { "" } else { " " },
                class,
                x + 1.0,
                (width - 2.0).max(1.0),
                (bottom - y).max(0.0),
                if name.is_empty() {
                    String::new()
                } else {
                    format!(r#" data-layer="{}" data-count="{count}""#, esc(name))
                },
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                out,
                r#"<text class="tick bucket" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                x + width / 2.0,
                HEIGHT - 8.0,
                esc(bucket)
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

    #[test]
    fn ticks_end_where_the_float_spacing_is_coarser_than_a_round_step() {
        // Float spacing at 1e17 is 16, so a step of 5 added to a tick leaves it where it was.
        let t = ticks(-1.000_000_000_000_000_2e17, -1e17, 4);
        assert!(!t.is_empty() && t.len() <= MAX_TICKS, "{t:?}");
        assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
        let svg = lines(
            &[Line {
                label: "g".into(),
                color: "#000".into(),
                points: vec![(1, -1.000_000_000_000_000_2e17), (2, -1e17)],
                readings: Vec::new(),
            }],
            (0, 3),
            &|v| v.to_string(),
        );
        assert!(svg.len() < 10_000, "{} bytes", svg.len());
    }

    #[test]
    fn many_buckets_are_merged_into_a_bounded_number_of_bars() {
        let buckets: Vec<(String, f64)> = (0..500_000).map(|i| (i.to_string(), 1.0)).collect();
        let stacked: Vec<(String, Vec<f64>)> =
            buckets.iter().map(|(l, c)| (l.clone(), vec![*c, f64::from(l.len() as u8)])).collect();
        let merged = merge_stacked(&stacked);
        assert!(merged.len() <= MAX_BARS);
        assert_eq!(merged.iter().map(|b| b.1[0]).sum::<f64>(), 500_000.0, "no count is lost");
        let digits: f64 = stacked.iter().map(|b| b.1[1]).sum();
        assert_eq!(merged.iter().map(|b| b.1[1]).sum::<f64>(), digits, "nor in the second layer");
        assert_eq!(merged[0].0, "0 … 2499");
        assert!(bars(&buckets).matches("<rect").count() <= MAX_BARS);
        let layers = [("a", "A"), ("b", "B")];
        assert!(stacked_bars(&stacked, &layers, "two").matches("<rect").count() <= 2 * MAX_BARS);
    }

    /// The coordinates in a chart: every x, y, width and height attribute's number.
    fn numbers(svg: &str) -> Vec<f64> {
        let names = [
            " x=\"",
            " y=\"",
            " x1=\"",
            " x2=\"",
            " y1=\"",
            " y2=\"",
            " cx=\"",
            " cy=\"",
            " width=\"",
            " height=\"",
        ];
        names
            .iter()
            .flat_map(|name| svg.split(name).skip(1))
            .map(|rest| rest.split('"').next().unwrap_or_default().parse::<f64>().unwrap_or(f64::NAN))
            .collect()
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(0.0),
            Just(-0.0),
            (-1e20f64..1e20),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn ticks_are_total(low in any_f64(), high in any_f64(), count in 0usize..20) {
            let t = ticks(low, high, count);
            prop_assert!(!t.is_empty() && t.len() <= MAX_TICKS);
            prop_assert!(t.iter().all(|v| v.is_finite()));
            prop_assert!(t.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn adjacent_values_at_any_scale_give_bounded_ticks(x in any_f64(), steps in 0u64..4) {
            let next = if x.is_finite() { f64::from_bits(x.to_bits().wrapping_add(steps)) } else { x };
            let t = ticks(x.min(next), x.max(next), 4);
            prop_assert!(!t.is_empty() && t.len() <= MAX_TICKS);
        }

        #[test]
        fn line_charts_are_finite_and_bounded(
            values in proptest::collection::vec(any_f64(), 0..40),
            x0 in any::<u64>(),
            x1 in any::<u64>(),
        ) {
            let points = values.iter().enumerate().map(|(i, v)| (x0.wrapping_add(i as u64), *v)).collect();
            let line = Line { label: "s".into(), color: "#000".into(), points, readings: Vec::new() };
            let svg = lines(&[line], (x0.min(x1), x0.max(x1)), &|v| format!("{v}"));
            prop_assert!(svg.len() < 8_000 + 300 * values.len(), "{} bytes", svg.len());
            for n in numbers(&svg) {
                prop_assert!(n.is_finite() && (-1.0..=WIDTH + 1.0).contains(&n), "{n} in {svg}");
            }
            prop_assert!(!svg.contains("NaN") || values.iter().any(|v| v.is_nan()));
        }

        #[test]
        fn bar_charts_are_finite_and_bounded(counts in proptest::collection::vec(any_f64(), 0..400)) {
            let buckets: Vec<(String, f64)> = counts.iter().map(|c| (String::new(), *c)).collect();
            let svg = bars(&buckets);
            prop_assert!(svg.matches("<rect").count() <= MAX_BARS);
            for n in numbers(&svg) {
                prop_assert!(n.is_finite() && (-1.0..=WIDTH + 1.0).contains(&n), "{n}");
            }
        }

        #[test]
        fn scatter_plots_are_finite(durations in proptest::collection::vec(any::<u64>(), 0..40)) {
            let points: Vec<TracePoint> = durations
                .iter()
                .map(|d| TracePoint { start: *d, duration: *d, href: String::new(), title: String::new(), error: false })
                .collect();
            for n in numbers(&scatter(&points, (0, u64::MAX))) {
                prop_assert!(n.is_finite() && (-1.0..=WIDTH + 1.0).contains(&n), "{n}");
            }
        }
    }
}
