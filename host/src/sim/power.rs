//! Host power models: SPECpower tables (watts at 0 %, 10 %, …, 100 % CPU), linear in between.
//!
//! The table ships embedded (`host/data/power_models_specpower.csv`, from the SPECpower_ssj2008
//! results CloudSim 3.0.3 encodes); a scenario names a model or gives its own eleven points.

/// The embedded SPECpower table.
const SPECPOWER_CSV: &str = include_str!("../../data/power_models_specpower.csv");

/// Power (W) at 0 %, 10 %, …, 100 % CPU utilization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerCurve(pub [f64; 11]);

impl PowerCurve {
    /// Power at `utilization` (fraction, clamped to 0..=1), linear between the 10 % points.
    pub fn watts(&self, utilization: f64) -> f64 {
        let u = utilization.clamp(0.0, 1.0) * 10.0;
        let lo = (u.floor() as usize).min(10);
        if lo == 10 {
            return self.0[10];
        }
        let frac = u - lo as f64;
        self.0[lo] + (self.0[lo + 1] - self.0[lo]) * frac
    }

    /// Power at full load.
    pub fn max_watts(&self) -> f64 {
        self.0[10]
    }

    /// The curve as the scheduler's snapshot carries it.
    pub fn as_f32(&self) -> [f32; 11] {
        self.0.map(|w| w as f32)
    }

    /// A model of the embedded SPECpower table by name (e.g. `HpProLiantMl110G4Xeon3040`),
    /// case-insensitive.
    pub fn specpower(name: &str) -> Option<PowerCurve> {
        specpower_models().into_iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, c)| c)
    }
}

/// Every model of the embedded SPECpower table, in file order.
pub fn specpower_models() -> Vec<(String, PowerCurve)> {
    let mut out = Vec::new();
    for line in SPECPOWER_CSV.lines() {
        if line.starts_with('#') || line.starts_with("model,") || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 13 {
            continue;
        }
        let mut w = [0.0; 11];
        let mut ok = true;
        for (slot, text) in w.iter_mut().zip(&fields[2..]) {
            match text.trim().parse::<f64>() {
                Ok(v) => *slot = v,
                Err(_) => ok = false,
            }
        }
        if ok {
            out.push((fields[0].to_string(), PowerCurve(w)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_has_the_reference_hosts() {
        let g4 = PowerCurve::specpower("HpProLiantMl110G4Xeon3040").expect("G4");
        let g5 = PowerCurve::specpower("hpproliantml110g5xeon3075").expect("G5");
        assert_eq!(g4.0[0], 86.0);
        assert_eq!(g4.max_watts(), 117.0);
        assert_eq!(g5.0[5], 116.0);
        assert_eq!(specpower_models().len(), 7);
    }

    #[test]
    fn interpolates_between_ten_percent_points() {
        let g4 = PowerCurve::specpower("HpProLiantMl110G4Xeon3040").expect("G4");
        assert!((g4.watts(0.0) - 86.0).abs() < 1e-12);
        assert!((g4.watts(0.05) - 87.7).abs() < 1e-9);
        assert!((g4.watts(0.45) - 100.75).abs() < 1e-9);
        assert!((g4.watts(1.0) - 117.0).abs() < 1e-12);
        assert!((g4.watts(1.5) - 117.0).abs() < 1e-12);
    }
}
