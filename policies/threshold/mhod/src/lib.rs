//! MHOD: Markov host overload detection (Beloglazov & Buyya, "Managing Overloaded Hosts for
//! Dynamic Consolidation of Virtual Machines in Cloud Data Centers under Quality of Service
//! Constraints", IEEE TPDS 2013) — OpenStack Neat's default overload detector, with Neat's
//! defaults: two states split at `threshold` = 0.8, OTF parameter 0.1, window sizes 30…100,
//! brute-force step 0.5, 10 learning steps.
//!
//! 1. The utilization history becomes a state sequence (state 1 = at or above `threshold`).
//! 2. Transition probabilities are estimated by **multisize sliding windows**: for each pair of
//!    states and each window size, a series of estimates; the largest window whose estimates'
//!    variance is within the acceptable variance p(1 − p)/w is used.
//! 3. In the overload state (and when staying there is possible), the host looks for a control
//!    policy — migration probabilities (m0, m1) on a grid of `step` — that maximizes the expected
//!    time until a migration (L0 + L1 of the two-state chain) while keeping the overload time
//!    fraction `(migration steps + time in state 1 + L1) / (migration steps + time + L0 + L1)`
//!    within `otf`. **No such policy: the host is overloaded** (Neat's deterministic command).
//!
//! Neat keeps the time counters since the host started; a policy here sees the history the host
//! keeps (`window` samples), so the counters and estimates run over that history.
use amvm_sdk::prelude::*;

struct Mhod {
    threshold: f32,
    otf: f64,
    windows: Vec<usize>,
    step: f64,
    learning_steps: usize,
    lower: f32,
}

/// Transition-probability estimates by multisize sliding windows over a two-state sequence
/// (`[from][to]`).
fn estimate(states: &[usize], windows: &[usize]) -> [[f64; 2]; 2] {
    // Per `from`: prefix counts of state 1 among the states that followed it, so the share of a
    // state in the newest `w` of them is two lookups; and per `to` and window size the series of
    // estimates (only its newest `w` values count).
    let mut ones: [Vec<u32>; 2] = [vec![0], vec![0]];
    let mut estimates: [[Vec<Vec<f64>>; 2]; 2] =
        std::array::from_fn(|_| std::array::from_fn(|_| vec![Vec::new(); windows.len()]));
    let mut previous = 0;
    for &current in states {
        let prefix = &mut ones[previous];
        let last = prefix[prefix.len() - 1];
        prefix.push(last + u32::from(current == 1));
        let len = prefix.len() - 1;
        for (k, &w) in windows.iter().enumerate() {
            let tail = w.min(len);
            let over = f64::from(prefix[len] - prefix[len - tail]);
            let w = w as f64;
            estimates[previous][1][k].push(over / w);
            estimates[previous][0][k].push((tail as f64 - over) / w);
        }
        previous = current;
    }
    let mut p = [[0.0; 2]; 2];
    for from in 0..2 {
        for to in 0..2 {
            let mut selected = 0;
            for (k, &w) in windows.iter().enumerate() {
                let all = &estimates[from][to][k];
                let series = &all[all.len().saturating_sub(w)..];
                let variance = if series.len() < w {
                    1.0
                } else {
                    let mean = series.iter().sum::<f64>() / w as f64;
                    series.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (w as f64 - 1.0).max(1.0)
                };
                let last = series.last().copied().unwrap_or(0.0);
                let acceptable = last * (1.0 - last) / w as f64;
                if variance > acceptable {
                    break;
                }
                selected = k;
            }
            p[from][to] = estimates[from][to][selected].last().copied().unwrap_or(0.0);
        }
    }
    p
}

/// Expected time in states 0 and 1 before a migration, from initial distribution `init`, under
/// migration probabilities `m` (the two-state chain's closed form); `None` when undefined.
fn l_functions(init: [f64; 2], p: [[f64; 2]; 2], m: [f64; 2]) -> Option<(f64, f64)> {
    let ([p0, p1], [m0, m1]) = (init, m);
    let (p00, p01, p10, p11) = (p[0][0], p[0][1], p[1][0], p[1][1]);
    let den = p00 * (m1 * (p11 - m0 * p11) - p11 + m0 * (p11 - 1.0) + 1.0) - m1 * p11
        + p11
        + (m1 * (m0 * p01 - p01) - m0 * p01 + p01) * p10
        - 1.0;
    if den == 0.0 || !den.is_finite() {
        return None;
    }
    let l0 = (p0 * (-m1 * p11 + p11 - 1.0) + (m1 * p1 - p1) * p10) / den;
    let l1 = -(p00 * (m0 * p1 - p1) + p1 + p0 * (p01 - m0 * p01)) / den;
    (l0.is_finite() && l1.is_finite()).then_some((l0, l1))
}

impl Mhod {
    fn overloaded(&self, row: &[f32], migration_steps: f64) -> bool {
        let history: Vec<f32> = row.iter().copied().filter(|v| !v.is_nan()).collect();
        if history.len() < self.learning_steps {
            return false;
        }
        // Only a host in the overload state now can be overloaded: the rest skip the estimation.
        if history[history.len() - 1] < self.threshold {
            return false;
        }
        let states: Vec<usize> = history.iter().map(|&u| usize::from(u >= self.threshold)).collect();
        let p = estimate(&states, &self.windows);
        if p[1][1] <= 0.0 {
            return false;
        }
        let time = states.len() as f64;
        let time_over = states.iter().filter(|&&s| s == 1).count() as f64;
        let init = [0.0, 1.0];
        // Brute force over the grid, as Neat: keep the best objective above 0 that meets the
        // constraint; none found means migrate now.
        let mut best = 0.0;
        let mut found = false;
        let n = (1.0 / self.step).floor() as usize;
        for i in 0..=n {
            for j in 0..=n {
                let m = [i as f64 * self.step, j as f64 * self.step];
                let Some((l0, l1)) = l_functions(init, p, m) else { continue };
                let objective = l0 + l1;
                let otf = (migration_steps + time_over + l1) / (migration_steps + time + l0 + l1);
                if objective > best && otf <= self.otf {
                    best = objective;
                    found = true;
                }
            }
        }
        !found
    }
}

impl ThresholdPolicy for Mhod {
    fn describe() -> Descriptor {
        Descriptor::threshold("mhod", env!("CARGO_PKG_VERSION"))
            .summary(
                "Markov host overload detection: overloaded when no policy keeps the overload time fraction within otf",
            )
            .param(ParamSpec::float("otf", 0.1).range(0.0, 1.0).help("Allowed overload time fraction (OTF)"))
            .param(
                ParamSpec::float("threshold", 0.8)
                    .range(0.0, 2.0)
                    .help("Utilization splitting the two states (state 1 = overloaded)"),
            )
            .param(ParamSpec::integer("min_window", 30).range(2.0, 10_000.0).help("Smallest estimation window"))
            .param(ParamSpec::integer("max_window", 100).range(2.0, 10_000.0).help("Largest estimation window"))
            .param(
                ParamSpec::integer("window_step", 10)
                    .range(1.0, 10_000.0)
                    .help("Window sizes from min to max by this step"),
            )
            .param(ParamSpec::float("step", 0.5).range(0.01, 1.0).help("Grid step of the brute-force policy search"))
            .param(ParamSpec::integer("learning_steps", 10).range(1.0, 10_000.0).help("Samples needed before deciding"))
            .param(amvm_sdk::rules::lower_param())
    }

    fn configure(p: &Params) -> Result<Self, String> {
        let (min, max, step) = (p.integer("min_window"), p.integer("max_window"), p.integer("window_step"));
        if min > max {
            return Err(format!("min_window {min} is above max_window {max}"));
        }
        let windows: Vec<usize> = (min..=max).step_by(step.max(1) as usize).map(|w| w as usize).collect();
        Ok(Mhod {
            threshold: p.float("threshold") as f32,
            otf: p.float("otf"),
            windows,
            step: p.float("step"),
            learning_steps: p.integer("learning_steps").max(1) as usize,
            lower: p.float("lower") as f32,
        })
    }

    fn classify(&mut self, ctx: &Context, hosts: &Hosts) -> Vec<HostClass> {
        let interval = f64::from(ctx.interval_s.max(f32::MIN_POSITIVE));
        let lower = self.lower;
        hosts.classify_each(lower, |i, row| self.overloaded(row, f64::from(hosts.max_migration_s(i)) / interval))
    }
}

amvm_sdk::export!(threshold: Mhod);
