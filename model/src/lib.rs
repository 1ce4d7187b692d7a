//! The paper's analytic model of live migration (section 4.3, equations 1–7), the classic
//! pre-copy geometric series, and the choice of mechanism per move (pre-copy, post-copy or
//! hybrid-copy). Pure arithmetic with no I/O, so the engine, the host and the built-in
//! `model` policy (a WebAssembly component) share one implementation.
//!
//! Symbols (Table 3): `V_mem` memory, `V_dirty` memory dirtied during the full round, `V_mig`
//! data transferred, `T_down` downtime, `T_mig` total time, `T_resume` time from resume to
//! all pages present, `B` bandwidth, `D` dirty rate, `R` memory access rate, `F` page faults,
//! `W_vcpu` vCPU state size, `λ` network delay, `ε` resume overhead.

use serde::{Deserialize, Serialize};

/// Migration mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Iterative pre-copy rounds, then stop-and-copy.
    Pre,
    /// Stop at once, resume at the destination, fetch all memory by demand and push.
    Post,
    /// One full round, stop-copy of vCPU state and dirty bitmap, then demand + push.
    Hybrid,
}

impl Mode {
    /// Every mode, in the order above.
    pub const ALL: [Mode; 3] = [Mode::Pre, Mode::Post, Mode::Hybrid];

    /// Short name (`pre`, `post`, `hybrid`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pre => "pre",
            Self::Post => "post",
            Self::Hybrid => "hybrid",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name that is none of `pre`, `post`, `hybrid` (or their long forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl std::fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown mode {:?} (pre, post, hybrid)", self.0)
    }
}

impl std::error::Error for UnknownMode {}

impl std::str::FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pre" | "precopy" | "pre-copy" => Ok(Self::Pre),
            "post" | "postcopy" | "post-copy" => Ok(Self::Post),
            "hybrid" | "hybrid-copy" => Ok(Self::Hybrid),
            _ => Err(UnknownMode(s.to_string())),
        }
    }
}

/// Model inputs (bytes, seconds, pages per second for `R`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// `V_mem` in bytes.
    pub v_mem: f64,
    /// `B` in bytes per second.
    pub bandwidth: f64,
    /// `D` in bytes per second (unique pages dirtied per second over the full round).
    pub dirty_rate: f64,
    /// `R`: guest memory accesses (pages) per second.
    pub access_rate: f64,
    /// `W_vcpu` in bytes (vCPU state plus dirty bitmap).
    pub w_vcpu: f64,
    /// `λ`: one demand request's network delay in seconds.
    pub latency: f64,
    /// `ε`: resume overhead in seconds.
    pub epsilon: f64,
    /// Pre-copy round limit.
    pub max_rounds: u32,
    /// Pre-copy downtime target in seconds.
    pub downtime_target: f64,
}

impl Params {
    /// The inputs AMVM uses when only memory, link and dirty rate are known (bytes, bytes/s):
    /// `R` from `D` (every dirtied page is one access), 1 MiB of vCPU state and dirty bitmap,
    /// λ = 0.5 ms, ε = 5 ms, at most 30 rounds, a 300 ms downtime target (QEMU's default).
    pub fn from_link(v_mem: f64, bandwidth: f64, dirty_rate: f64) -> Self {
        Params {
            v_mem,
            bandwidth,
            dirty_rate,
            access_rate: dirty_rate / 4096.0,
            w_vcpu: 1024.0 * 1024.0,
            latency: 0.0005,
            epsilon: 0.005,
            max_rounds: 30,
            downtime_target: 0.3,
        }
    }
}

/// Model outputs for one mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Mode predicted.
    pub mode: Mode,
    /// Eq. 1: `V_dirty = V_mem·D/B` (bytes).
    pub v_dirty: f64,
    /// Eq. 2 (hybrid), `V_mem` (post), geometric series (pre): bytes transferred.
    pub v_mig: f64,
    /// Eq. 4: `T_down = W_vcpu/B + ε` (plus the last round for pre-copy), seconds.
    pub t_down: f64,
    /// Eq. 5: `T_resume = V_dirty/B + F·λ`, seconds.
    pub t_resume: f64,
    /// Eq. 6: `F = V_dirty²·R / (2·B·V_mem)` page faults.
    pub faults: f64,
    /// Eq. 3: `T_mig = V_mem/B + T_down + T_resume`, seconds (pre: `V_mig/B + T_down`).
    pub t_mig: f64,
    /// Eq. 7, the closed form of eq. 3 (hybrid only; equals `t_mig` up to rounding).
    pub t_mig_eq7: f64,
    /// Pre-copy rounds including the first full one.
    pub rounds: u32,
    /// Inputs used.
    pub params: Params,
}

/// Eq. 6 with a general `V_dirty`.
fn faults(v_dirty: f64, p: &Params) -> f64 {
    if p.v_mem <= 0.0 || p.bandwidth <= 0.0 {
        return 0.0;
    }
    v_dirty * v_dirty * p.access_rate / (2.0 * p.bandwidth * p.v_mem)
}

/// Predicts one migration of `mode`.
pub fn predict(mode: Mode, p: &Params) -> Prediction {
    let b = p.bandwidth.max(1.0);
    let v_dirty = (p.v_mem * p.dirty_rate / b).min(p.v_mem); // eq. 1
    let t_down_base = p.w_vcpu / b + p.epsilon; // eq. 4
    let empty = Prediction {
        mode,
        v_dirty,
        v_mig: 0.0,
        t_down: t_down_base,
        t_resume: 0.0,
        faults: 0.0,
        t_mig: 0.0,
        t_mig_eq7: 0.0,
        rounds: 0,
        params: *p,
    };
    match mode {
        Mode::Hybrid => {
            let v_mig = p.v_mem + v_dirty; // eq. 2
            let f = faults(v_dirty, p); // eq. 6
            let t_resume = v_dirty / b + f * p.latency; // eq. 5
            let t_mig = p.v_mem / b + t_down_base + t_resume; // eq. 3
            let d = p.dirty_rate;
            let t7 = (p.v_mem + p.w_vcpu) / b
                + p.v_mem * d / (b * b)
                + p.v_mem * p.access_rate * d * d * p.latency / (2.0 * b * b * b)
                + p.epsilon; // eq. 7
            Prediction { v_mig, faults: f, t_resume, t_mig, t_mig_eq7: t7, rounds: 1, ..empty }
        }
        Mode::Post => {
            // Post-copy is hybrid-copy with V_dirty = V_mem and no full round.
            let f = faults(p.v_mem, p);
            let t_resume = p.v_mem / b + f * p.latency;
            Prediction { v_dirty: p.v_mem, v_mig: p.v_mem, faults: f, t_resume, t_mig: t_down_base + t_resume, ..empty }
        }
        // Round i sends V_mem·ρ^i with ρ = D/B: the geometric series.
        Mode::Pre => predict_pre_with(p, |t| p.dirty_rate * t),
    }
}

/// The model's choice of mechanism for one move, with the three predictions behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub mode: Mode,
    /// Pre-copy converges: its stop-copy fits the downtime target within the round limit.
    pub pre_converges: bool,
    pub pre: Prediction,
    pub post: Prediction,
    pub hybrid: Prediction,
}

/// The guest's predicted stall: downtime plus the time its faults wait on the network.
fn stall(p: &Prediction) -> f64 {
    p.t_down + p.faults * p.params.latency
}

/// Picks pre-copy, post-copy or hybrid-copy for one move from the predictions:
/// - **pre-copy** when it converges (the guest never runs split across two hosts, nothing is
///   lost if the link fails);
/// - otherwise the one of post and hybrid with the lower cost = predicted stall (eq. 4 + eq. 6
///   × λ) + a tenth of the total time (eq. 3: the link and both hosts are busy that long).
///   Post-copy wins only when the faults it adds cost less than hybrid's extra full round.
pub fn choose_mode(p: &Params) -> Choice {
    let pre = predict(Mode::Pre, p);
    let post = predict(Mode::Post, p);
    let hybrid = predict(Mode::Hybrid, p);
    let stop_copy = pre.t_down - (p.w_vcpu / p.bandwidth.max(1.0) + p.epsilon);
    let pre_converges = stop_copy <= p.downtime_target + 1e-9;
    let cost = |x: &Prediction| stall(x) + x.t_mig / 10.0;
    let mode = if pre_converges {
        Mode::Pre
    } else if cost(&post) < cost(&hybrid) {
        Mode::Post
    } else {
        Mode::Hybrid
    };
    Choice { mode, pre_converges, pre, post, hybrid }
}

/// Pre-copy with a general dirtying function: `dirtied(t)` bytes become dirty during a round
/// of `t` seconds (`D·t` gives the geometric series; a hot set that saturates does not).
/// Rounds continue until the rest fits the downtime target or the round limit; the rest goes
/// in the stop-copy.
pub fn predict_pre_with(p: &Params, dirtied: impl Fn(f64) -> f64) -> Prediction {
    let b = p.bandwidth.max(1.0);
    let t_down_base = p.w_vcpu / b + p.epsilon;
    let (mut v_mig, mut round_bytes, mut rounds) = (0.0, p.v_mem, 0u32);
    loop {
        v_mig += round_bytes;
        rounds += 1;
        let next = dirtied(round_bytes / b).clamp(0.0, p.v_mem);
        if next / b <= p.downtime_target || rounds >= p.max_rounds.max(1) {
            let t_down = next / b + t_down_base;
            let v_mig = v_mig + next;
            return Prediction {
                mode: Mode::Pre,
                v_dirty: dirtied(p.v_mem / b).clamp(0.0, p.v_mem),
                v_mig,
                t_down,
                t_resume: 0.0,
                faults: 0.0,
                t_mig: v_mig / b + t_down_base,
                t_mig_eq7: 0.0,
                rounds,
                params: *p,
            };
        }
        round_bytes = next;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_model_picks_pre_copy_when_it_converges_and_hybrid_when_it_does_not() {
        let base = Params {
            v_mem: 512.0 * 1048576.0,
            bandwidth: 125e6,
            dirty_rate: 1e6,
            access_rate: 250.0,
            w_vcpu: 1048576.0,
            latency: 0.0005,
            epsilon: 0.005,
            max_rounds: 30,
            downtime_target: 0.3,
        };
        let idle = choose_mode(&base);
        assert!(idle.pre_converges);
        assert_eq!(idle.mode, Mode::Pre);
        // Dirtying at 96 % of the link: pre-copy cannot converge; hybrid's faults (eq. 6 over
        // V_dirty) cost far less than post-copy's over all of memory.
        let busy = Params { dirty_rate: 120e6, access_rate: 120e6 / 4096.0, ..base };
        let c = choose_mode(&busy);
        assert!(!c.pre_converges);
        assert!(c.hybrid.faults < c.post.faults);
        assert_eq!(c.mode, Mode::Hybrid);
        // With free faults (no network delay) post-copy's shorter time wins.
        let c = choose_mode(&Params { latency: 0.0, ..busy });
        assert_eq!(c.mode, Mode::Post);
    }

    use super::*;

    fn params(d: f64) -> Params {
        Params {
            v_mem: 4e9,
            bandwidth: 125e6,
            dirty_rate: d,
            access_rate: 1e4,
            w_vcpu: 1e5,
            latency: 1e-4,
            epsilon: 1e-3,
            max_rounds: 30,
            downtime_target: 0.3,
        }
    }

    #[test]
    fn eq7_is_the_closed_form_of_eq3() {
        let p = params(20e6);
        let h = predict(Mode::Hybrid, &p);
        assert!((h.t_mig - h.t_mig_eq7).abs() < 1e-6 * h.t_mig, "{} vs {}", h.t_mig, h.t_mig_eq7);
        assert!((h.v_mig - (4e9 + 4e9 * 20e6 / 125e6)).abs() < 1.0);
    }

    #[test]
    fn pre_copy_sums_a_geometric_series_and_idle_equals_v_mem() {
        let idle = predict(Mode::Pre, &params(0.0));
        assert_eq!(idle.rounds, 1);
        assert!((idle.v_mig - 4e9).abs() < 1.0);
        let busy = predict(Mode::Pre, &params(62.5e6)); // rho = 0.5
        assert!(busy.v_mig > 7.9e9 && busy.v_mig < 8.0e9, "{}", busy.v_mig);
        let hot = predict(Mode::Pre, &params(200e6)); // rho capped at 1: hits the round limit
        assert_eq!(hot.rounds, 30);
    }

    #[test]
    fn hybrid_faults_are_fewer_than_post_copy() {
        let p = params(20e6);
        assert!(predict(Mode::Hybrid, &p).faults < predict(Mode::Post, &p).faults);
    }
}
