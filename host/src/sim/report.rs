//! The A/B report as one self-contained HTML file: tables plus inline SVG charts, no scripts,
//! no external resources, so it opens offline.

use std::fmt::Write as _;

use super::ab::{short, AbResult};

const COLOR_A: &str = "#1f77b4";
const COLOR_B: &str = "#d62728";
const W: f64 = 720.0;
const H: f64 = 260.0;
const PAD_L: f64 = 64.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 40.0;

/// Renders the report.
pub fn html(ab: &AbResult) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let (a, b) = (esc(&ab.a), esc(&ab.b));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>A/B: {a} vs {b}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\
         th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}\
         .a{{color:{COLOR_A}}}.b{{color:{COLOR_B}}}.sig{{font-weight:bold}}svg{{display:block;margin:1em 0}}\
         </style></head><body>\n<h1>A/B test: <span class=\"a\">A = {a}</span> vs <span class=\"b\">B = {b}</span></h1>\n\
         <p>{} trace(s), {} ms. Differences are B − A; 95 % confidence intervals from the paired differences \
         over traces (Student t).</p>\n",
        ab.traces.len(),
        ab.elapsed_ms.round()
    );
    out.push_str("<h2>Verdicts</h2>\n<ul>\n");
    for c in &ab.comparisons {
        let class = if c.significant { " class=\"sig\"" } else { "" };
        let _ = writeln!(out, "<li{class}>{}</li>", esc(&c.verdict));
    }
    out.push_str(
        "</ul>\n<h2>Per metric</h2>\n<table><tr><th>metric</th><th>mean A</th><th>mean B</th>\
                  <th>B − A</th><th>95 % CI</th><th>relative</th></tr>\n",
    );
    for c in &ab.comparisons {
        let ci = c.ci95.map_or("–".to_string(), |(lo, hi)| format!("{} … {}", short(lo), short(hi)));
        let rel = c.relative_pct.map_or("–".to_string(), |r| format!("{r:+.1} %"));
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{ci}</td><td>{rel}</td></tr>",
            esc(&c.metric),
            short(c.mean_a),
            short(c.mean_b),
            short(c.mean_diff)
        );
    }
    out.push_str("</table>\n<h2>Charts</h2>\n");
    out.push_str(&active_hosts_chart(ab));
    let days: Vec<String> = ab.traces.iter().map(|t| t.trace.clone()).collect();
    let per = |f: &dyn Fn(&super::RunReport) -> f64| -> (Vec<f64>, Vec<f64>) {
        (ab.traces.iter().map(|t| f(&t.a)).collect(), ab.traces.iter().map(|t| f(&t.b)).collect())
    };
    let (ea, eb) = per(&|r| r.energy_kwh);
    out.push_str(&bar_chart("Energy per trace (kWh)", &days, &ea, &eb));
    let (ma, mb) = per(&|r| r.migrations as f64);
    out.push_str(&bar_chart("Migrations per trace", &days, &ma, &mb));
    let (sa, sb) = per(&|r| r.slav * 1e5);
    out.push_str(&bar_chart("SLAV per trace (× 10⁻⁵)", &days, &sa, &sb));
    out.push_str(
        "<h2>Per trace</h2>\n<table><tr><th>trace</th><th>strategy</th><th>energy kWh</th><th>migrations</th>\
                  <th>SLATAH %</th><th>PDM %</th><th>SLAV ×10⁻⁵</th><th>ESV ×10⁻³</th><th>shutdowns</th>\
                  <th>mean active hosts</th><th>run ms</th></tr>\n",
    );
    for t in &ab.traces {
        for (name, r) in [(&ab.a, &t.a), (&ab.b, &t.b)] {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{:.2}</td><td>{:.3}</td><td>{:.2}</td>\
                 <td>{:.3}</td><td>{}</td><td>{:.1}</td><td>{:.0}</td></tr>",
                esc(&t.trace),
                esc(name),
                r.energy_kwh,
                r.migrations,
                r.slatah * 100.0,
                r.pdm * 100.0,
                r.slav * 1e5,
                r.esv * 1e3,
                r.host_shutdowns,
                r.mean_active_hosts,
                r.elapsed_ms
            );
        }
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

/// Active hosts over time, averaged over the traces (they share the step grid when they come
/// from the same scenario; shorter series are averaged where they exist).
fn active_hosts_chart(ab: &AbResult) -> String {
    let mean_series = |pick: &dyn Fn(&super::ab::AbTrace) -> Option<&super::Series>| -> (Vec<f64>, Vec<f64>) {
        let all: Vec<&super::Series> = ab.traces.iter().filter_map(pick).collect();
        let len = all.iter().map(|s| s.time_s.len()).max().unwrap_or(0);
        let mut xs = Vec::with_capacity(len);
        let mut ys = Vec::with_capacity(len);
        for i in 0..len {
            let vals: Vec<f64> = all.iter().filter_map(|s| s.active_hosts.get(i).map(|&v| f64::from(v))).collect();
            let t = all.iter().find_map(|s| s.time_s.get(i)).copied().unwrap_or(0.0);
            xs.push(t / 3600.0);
            ys.push(vals.iter().sum::<f64>() / vals.len().max(1) as f64);
        }
        (xs, ys)
    };
    let (xa, ya) = mean_series(&|t| t.a.series.as_ref());
    let (_, yb) = mean_series(&|t| t.b.series.as_ref());
    line_chart("Active hosts over time (mean over traces), hours", &xa, &[("A", COLOR_A, &ya), ("B", COLOR_B, &yb)])
}

/// A round axis maximum: four ticks of 1, 2, 2.5 or 5 × 10^k covering the data.
fn axis_max(values: impl Iterator<Item = f64>) -> f64 {
    let m = values.filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    if m <= 0.0 {
        return 1.0;
    }
    let raw_step = m / 4.0;
    let pow = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|f| f * pow).find(|s| *s >= raw_step).unwrap_or(10.0 * pow);
    step * 4.0
}

fn frame(out: &mut String, title: &str, y_max: f64) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
         <title>{t}</title><text x=\"{PAD_L}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{t}</text>",
        t = esc(title)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = H - PAD_B - (H - PAD_T - PAD_B) * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            W - PAD_R,
            PAD_L - 6.0,
            y + 4.0,
            short(v)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{COLOR_A}\">■ A</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{COLOR_B}\">■ B</text>",
        W - 90.0,
        18,
        W - 50.0,
        18
    );
}

fn line_chart(title: &str, xs: &[f64], series: &[(&str, &str, &[f64])]) -> String {
    let mut out = String::new();
    let y_max = axis_max(series.iter().flat_map(|s| s.2.iter().copied()));
    let x_max = xs.iter().copied().fold(0.0f64, f64::max).max(1e-9);
    frame(&mut out, title, y_max);
    let sx = |x: f64| PAD_L + (W - PAD_L - PAD_R) * x / x_max;
    let sy = |y: f64| H - PAD_B - (H - PAD_T - PAD_B) * y / y_max;
    for i in 0..=4 {
        let x = x_max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            sx(x),
            H - PAD_B + 16.0,
            short(x)
        );
    }
    for (_, color, ys) in series {
        let points: Vec<String> =
            xs.iter().zip(ys.iter()).map(|(&x, &y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}

fn bar_chart(title: &str, categories: &[String], a: &[f64], b: &[f64]) -> String {
    let mut out = String::new();
    let y_max = axis_max(a.iter().chain(b).copied());
    frame(&mut out, title, y_max);
    let n = categories.len().max(1) as f64;
    let slot = (W - PAD_L - PAD_R) / n;
    let bar = (slot * 0.38).min(40.0);
    let sy = |y: f64| (H - PAD_T - PAD_B) * y / y_max;
    for (i, cat) in categories.iter().enumerate() {
        let x0 = PAD_L + slot * i as f64 + slot / 2.0;
        for (j, (v, color)) in [(a.get(i), COLOR_A), (b.get(i), COLOR_B)].into_iter().enumerate() {
            let v = v.copied().unwrap_or(0.0).max(0.0);
            let h = sy(v);
            let x = x0 - bar + bar * j as f64;
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{}</title></rect>",
                H - PAD_B - h,
                short(v)
            );
        }
        let _ = write!(
            out,
            "<text x=\"{x0:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            H - PAD_B + 14.0,
            esc(cat)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// HTML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(axis_max([365.0].into_iter()), 400.0);
        assert_eq!(axis_max([800.0, 3.0].into_iter()), 800.0);
        assert_eq!(axis_max([0.0].into_iter()), 1.0);
        assert_eq!(axis_max([9.0].into_iter()), 10.0);
    }

    #[test]
    fn escapes_names() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
