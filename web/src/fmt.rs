//! Number and time formatting shared by the pages.

pub fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1} %", x * 100.0)
    } else {
        "–".into()
    }
}

pub fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".into()
    }
}

pub fn watts(w: f64) -> String {
    if w >= 10_000.0 {
        format!("{:.1} kW", w / 1000.0)
    } else {
        format!("{w:.0} W")
    }
}

pub fn bytes(b: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b.max(0.0);
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn dur(s: f64) -> String {
    if !s.is_finite() {
        return "–".into();
    }
    let s = s.max(0.0);
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s < 86_400.0 {
        format!("{}h {:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    } else {
        format!("{}d {:02}h", (s / 86_400.0) as u64, ((s % 86_400.0) / 3600.0) as u64)
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC).
pub fn time(t: f64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(t * 1000.0));
    let iso = String::from(d.to_iso_string());
    iso.get(..16).map(|s| s.replace('T', " ")).unwrap_or(iso)
}

/// Unix seconds as `HH:MM` (UTC).
pub fn clock(t: f64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(t * 1000.0));
    let iso = String::from(d.to_iso_string());
    iso.get(11..16).map(str::to_string).unwrap_or(iso)
}

/// Wall-clock age of a Unix time stamp.
pub fn ago(t: i64) -> String {
    let now = js_sys::Date::now() / 1000.0;
    let d = (now - t as f64).max(0.0);
    if d < 5.0 {
        "just now".into()
    } else {
        format!("{} ago", dur(d))
    }
}
