//! The page's charts as inline SVG, drawn here so the page needs no script: stacked bars,
//! histograms, scatter plots over time, and plain bars. Each chart is an `<svg>` with a
//! `viewBox`, so it scales with the page; each mark has a `<title>` (the browser's
//! tooltip) with its exact value.

use std::fmt::Write;

/// Text for SVG and HTML: `&`, `<`, `>` and quotes escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as a short label: integers plain, others to 3 significant figures.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x.fract() == 0.0 && x.abs() < 1e9 {
        return format!("{x:.0}");
    }
    let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 4) as usize;
    format!("{x:.digits$}")
}

/// One named, coloured series of values.
pub struct Series<'a, T> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: T,
}

const W: f64 = 640.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;

fn open(height: f64, label: &str) -> String {
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        escape(label)
    )
}

fn legend<T>(out: &mut String, series: &[Series<'_, T>], y: f64) {
    let mut x = LEFT;
    for s in series {
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" class=\"legend\">{}</text>",
            y - 9.0,
            s.color,
            x + 14.0,
            y,
            escape(s.name)
        );
        x += 24.0 + 7.0 * s.name.chars().count() as f64;
    }
}

/// One horizontal bar per row, split into the series' shares (counts), with the row's
/// label on the left and its total on the right.
pub fn stacked_bars(label: &str, rows: &[(String, Vec<f64>)], series: &[Series<'_, ()>]) -> String {
    let left = 150.0;
    let bar_h = 22.0;
    let height = TOP + rows.len() as f64 * (bar_h + 8.0) + 30.0;
    let mut out = open(height, label);
    let width = W - left - 60.0;
    for (i, (name, counts)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * (bar_h + 8.0);
        let total: f64 = counts.iter().sum();
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"label\">{}</text>",
            left - 8.0,
            y + bar_h * 0.7,
            escape(name)
        );
        let mut x = left;
        for (count, s) in counts.iter().zip(series) {
            if *count <= 0.0 || total <= 0.0 {
                continue;
            }
            let w = width * count / total;
            let _ = write!(
                out,
                "<rect class=\"mark\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{}\"><title>{}: {} {} of {} ({:.1}%)</title></rect>",
                s.color,
                escape(name),
                num(*count),
                escape(s.name),
                num(total),
                100.0 * count / total
            );
            x += w;
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" class=\"label\">{}</text>",
            left + width + 6.0,
            y + bar_h * 0.7,
            num(total)
        );
    }
    legend(&mut out, series, height - 8.0);
    out.push_str("</svg>");
    out
}

/// A histogram of `values` (at most 20 bins over their range), x labelled `x_label`.
pub fn histogram(label: &str, x_label: &str, values: &[f64], color: &str) -> String {
    let height = 200.0;
    let bottom = 36.0;
    let mut out = open(height, label);
    let plot_h = height - TOP - bottom;
    let plot_w = W - LEFT - RIGHT;
    let (lo, hi) = range(values);
    let bins = ((values.len() as f64).sqrt().ceil() as usize).clamp(1, 20);
    let step = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let mut counts = vec![0usize; bins];
    for v in values {
        let b = (((v - lo) / step) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bar_w = plot_w / bins as f64;
    for (i, &c) in counts.iter().enumerate() {
        let h = plot_h * c as f64 / top;
        let x = LEFT + i as f64 * bar_w;
        let from = lo + i as f64 * step;
        let _ = write!(
            out,
            "<rect class=\"mark\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{} to {}: {c}</title></rect>",
            TOP + plot_h - h,
            (bar_w - 1.0).max(1.0),
            num(from),
            num(from + step)
        );
    }
    axes(
        &mut out,
        plot_w,
        plot_h,
        (lo, lo + step * bins as f64),
        (0.0, top),
    );
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{}</text><text x=\"12\" y=\"{}\" class=\"axis\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">tasks</text>",
        LEFT + plot_w / 2.0,
        height - 4.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    out.push_str("</svg>");
    out
}

/// Points `(x, y)` per series, with each series' mean over a sliding window drawn as a
/// line; `y_max` fixes the y range (e.g. 1 for a fraction).
pub fn scatter(
    label: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series<'_, Vec<(f64, f64)>>],
    y_max: Option<f64>,
) -> String {
    let height = 260.0;
    let bottom = 52.0;
    let mut out = open(height, label);
    let plot_h = height - TOP - bottom;
    let plot_w = W - LEFT - RIGHT;
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .collect();
    let x_hi = all.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_hi = y_max.unwrap_or_else(|| all.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9));
    let at = |(x, y): (f64, f64)| {
        (
            LEFT + plot_w * x / x_hi,
            TOP + plot_h - plot_h * (y / y_hi).min(1.0),
        )
    };
    for s in series {
        for &p in &s.values {
            let (cx, cy) = at(p);
            let _ = write!(
                out,
                "<circle class=\"mark\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"2.5\" fill=\"{}\" fill-opacity=\"0.55\"><title>{} at {} s: {}</title></circle>",
                s.color,
                escape(s.name),
                num(p.0),
                num(p.1)
            );
        }
        let mut sorted = s.values.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let window = (sorted.len() / 10).max(1);
        let line: Vec<String> = sorted
            .chunks(window)
            .map(|chunk| {
                let n = chunk.len() as f64;
                let x = chunk.iter().map(|p| p.0).sum::<f64>() / n;
                let y = chunk.iter().map(|p| p.1).sum::<f64>() / n;
                let (px, py) = at((x, y));
                format!("{px:.1},{py:.1}")
            })
            .collect();
        if line.len() > 1 {
            let _ = write!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
                line.join(" "),
                s.color
            );
        }
    }
    axes(&mut out, plot_w, plot_h, (0.0, x_hi), (0.0, y_hi));
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{}</text><text x=\"12\" y=\"{}\" class=\"axis\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">{}</text>",
        LEFT + plot_w / 2.0,
        TOP + plot_h + 30.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    legend(&mut out, series, height - 4.0);
    out.push_str("</svg>");
    out
}

/// One horizontal bar per `(label, value, color)`, scaled to the largest.
pub fn bars(label: &str, rows: &[(String, f64, &str)]) -> String {
    let left = 150.0;
    let bar_h = 18.0;
    let height = TOP + rows.len() as f64 * (bar_h + 6.0) + 8.0;
    let mut out = open(height, label);
    let width = W - left - 70.0;
    let top = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    for (i, (name, value, color)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * (bar_h + 6.0);
        let w = width * value / top;
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"label\">{}</text><rect class=\"mark\" x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{color}\"><title>{}: {}</title></rect><text x=\"{:.1}\" y=\"{}\" class=\"label\">{}</text>",
            left - 8.0,
            y + bar_h * 0.75,
            escape(name),
            escape(name),
            num(*value),
            left + w + 6.0,
            y + bar_h * 0.75,
            num(*value)
        );
    }
    out.push_str("</svg>");
    out
}

fn range(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// The two axes with their ends and middles labelled.
fn axes(out: &mut String, plot_w: f64, plot_h: f64, x: (f64, f64), y: (f64, f64)) {
    let base = TOP + plot_h;
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" class=\"frame\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base}\" class=\"frame\"/>",
        LEFT + plot_w
    );
    for f in [0.0, 0.5, 1.0] {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">{}</text><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>",
            LEFT + plot_w * f,
            base + 14.0,
            num(x.0 + (x.1 - x.0) * f),
            LEFT - 4.0,
            base - plot_h * f + 4.0,
            num(y.0 + (y.1 - y.0) * f)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_numbers_short() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(num(12.0), "12");
        assert_eq!(num(0.123456), "0.123");
        assert_eq!(num(12.3456), "12.3");
        assert_eq!(num(f64::NAN), "–");
    }

    #[test]
    fn a_histogram_counts_every_value_once() {
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let svg = histogram("h", "x", &values, "#000");
        let counted: usize = svg
            .match_indices("</title>")
            .map(|(at, _)| {
                let head = &svg[..at];
                head[head.rfind(": ").unwrap() + 2..]
                    .parse::<usize>()
                    .unwrap()
            })
            .sum();
        assert_eq!(counted, 100);
        // One value, or none: one bin, no division by zero.
        assert!(histogram("h", "x", &[3.0], "#000").contains("3 to 4: 1"));
        assert!(!histogram("h", "x", &[], "#000").contains("NaN"));
    }

    #[test]
    fn stacked_bars_give_each_share_its_count() {
        let series = [
            Series {
                name: "a",
                color: "#111",
                values: (),
            },
            Series {
                name: "b",
                color: "#222",
                values: (),
            },
        ];
        let svg = stacked_bars("s", &[("G1".into(), vec![3.0, 1.0])], &series);
        assert!(svg.contains("G1: 3 a of 4 (75.0%)"), "{svg}");
        assert!(svg.contains("G1: 1 b of 4 (25.0%)"), "{svg}");
    }
}
