//! Live migration between two QEMU processes driven directly over QMP (no libvirt daemon):
//! pre-copy, post-copy and hybrid-copy with the same [`Mode`]s as the memory engine, progress
//! phase by phase, and a report taken from QEMU's own migration statistics.
//!
//! - **pre**: QEMU's iterative pre-copy; it stops the guest when the rest fits `downtime-limit`.
//!   A guest that dirties memory faster than the link never converges: the migration is
//!   cancelled at `timeout` and the guest keeps running on the source.
//! - **post**: `postcopy-ram` on both sides and `migrate-start-postcopy` at once: the guest runs
//!   on the destination almost immediately and pulls its pages (post-copy requests = page
//!   faults that needed the network) while the source pushes the rest.
//! - **hybrid**: pre-copy passes, then the switch to post-copy. Two switch rules:
//!   [`HybridSwitch::AtStall`] (ours, the default) keeps copying while each pass's dirty set
//!   still shrinks by a fifth and switches when it stops shrinking, so the pages left for
//!   post-copy are close to the guest's hot set; [`HybridSwitch::AfterFirstPass`] switches when
//!   the first full pass ends, which is what `virsh migrate --postcopy-after-precopy` does.
//!   Either way QEMU may finish as plain pre-copy first if the rest fits the downtime limit.
//!
//! **Recovery**: when the stream breaks during post-copy both QEMUs enter `postcopy-paused`;
//! the guest keeps running on the destination (it cannot go back: the source no longer has its
//! newest pages) and the migration reconnects on a new port (`migrate-recover` on the
//! destination, `migrate` with `resume` on the source) until `recovery_timeout`. Before the
//! switch a broken stream fails the migration and the guest stays on the source.
//!
//! The link cap applies to both phases (`max-bandwidth` and `max-postcopy-bandwidth`): a real
//! 1 Gbit/s link does not get faster when post-copy starts.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::guest::{Guest, GuestError};
use super::qmp::QmpError;
use crate::memory::Mode;
use crate::model;

/// When a hybrid migration switches from pre-copy to post-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HybridSwitch {
    /// When a pass's dirty set no longer shrinks by 20 % (or after `max_passes`).
    AtStall,
    /// When the first full pass ends (`virsh migrate --postcopy-after-precopy`).
    AfterFirstPass,
}

impl HybridSwitch {
    pub fn name(self) -> &'static str {
        match self {
            HybridSwitch::AtStall => "at-stall",
            HybridSwitch::AfterFirstPass => "after-first-pass",
        }
    }
}

/// Settings of one QMP migration.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    pub mode: Mode,
    /// Hybrid only.
    pub switch: HybridSwitch,
    /// Link cap in bytes per second for both phases; `None` = as fast as QEMU goes.
    pub bandwidth: Option<f64>,
    /// QEMU's `downtime-limit` (ms): pre-copy stops the guest when the rest fits it.
    pub downtime_limit_ms: u64,
    /// Hybrid: switch after at most this many pre-copy passes.
    pub max_passes: u64,
    /// Hybrid: QEMU's `downtime-limit` during the pre-copy passes (ms). Small, so that QEMU
    /// finishes as plain pre-copy only when the rest is tiny and otherwise the switch to
    /// post-copy (a few ms of downtime) happens: hybrid trades bytes for downtime.
    pub hybrid_downtime_limit_ms: u64,
    /// A pre-copy phase still running after this is cancelled (the guest stays on the source).
    pub timeout: Duration,
    /// How often QEMU's statistics are read.
    pub poll: Duration,
    /// Fault injection: cut the migration stream (`migrate-pause`, QEMU's own simulation of a
    /// network failure) once post-copy has started, to exercise recovery.
    pub cut_link_in_postcopy: bool,
    /// How long a paused post-copy may take to recover before the migration gives up waiting
    /// (the guest keeps running on the destination either way: it cannot go back).
    pub recovery_timeout: Duration,
}

impl MigrateOptions {
    pub fn new(mode: Mode) -> MigrateOptions {
        MigrateOptions {
            mode,
            switch: HybridSwitch::AtStall,
            bandwidth: None,
            downtime_limit_ms: 300,
            max_passes: 8,
            hybrid_downtime_limit_ms: 5,
            timeout: Duration::from_secs(60),
            poll: Duration::from_millis(20),
            cut_link_in_postcopy: false,
            recovery_timeout: Duration::from_secs(60),
        }
    }
}

/// The phase a migration is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Setup,
    PreCopy,
    PostCopy,
    Completed,
}

/// One progress sample (every `poll`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// Pre-copy pass (QEMU's dirty-sync count; 1 = the first full pass).
    pub pass: u64,
    pub elapsed_ms: f64,
    pub bytes_sent: u64,
    pub bytes_remaining: u64,
    /// Pages dirtied per second × page size, as QEMU measures it (0 until the second pass).
    pub dirty_rate_bytes_per_s: f64,
    /// Throughput QEMU measured over the last interval.
    pub throughput_bytes_per_s: f64,
    /// Pre-copy is not converging: the guest dirties memory at least as fast as the link.
    pub non_convergence: bool,
}

/// Result of one migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QemuReport {
    pub mode: Mode,
    /// Hybrid only: the switch rule.
    pub switch: Option<HybridSwitch>,
    /// How the migration ended: `pre-copy` (converged before any switch) or `post-copy`.
    pub completed_as: String,
    pub accel: String,
    pub qemu_version: String,
    pub memory_mb: u32,
    pub bandwidth_bytes_per_s: Option<f64>,
    /// QEMU's `total-time`.
    pub total_time_ms: f64,
    /// Guest stopped at the source to running at the destination: QEMU's `downtime`, except
    /// where QEMU's figure is its own artefact (see `qemu_downtime_ms`); then 0 (under 1 ms).
    pub downtime_ms: f64,
    /// QEMU's `downtime` as reported. QEMU (10.0) keeps a post-copy switch's downtime in whole
    /// milliseconds and treats 0 as "not recorded yet", so a switch under 1 ms is reported as
    /// the whole post-copy phase.
    pub qemu_downtime_ms: f64,
    pub setup_time_ms: f64,
    /// QEMU's `ram.transferred`.
    pub bytes_transferred: u64,
    /// QEMU's `ram.postcopy-requests`: pages the destination faulted on and requested.
    pub page_faults: u64,
    /// Dirty syncs (pre-copy passes, counting the first full pass).
    pub passes: u64,
    /// Pass at which the switch to post-copy was requested.
    pub switched_at_pass: Option<u64>,
    /// Milliseconds from the start to the switch request.
    pub switch_after_ms: Option<f64>,
    /// Dirty set (bytes) at the start of each pass after the first.
    pub dirty_at_pass: Vec<u64>,
    /// Last dirty rate QEMU measured.
    pub dirty_rate_bytes_per_s: f64,
    /// The guest's run state at the destination afterwards (`running`).
    pub destination_state: String,
    /// Times a broken post-copy stream was re-established (`migrate-recover` + resume).
    pub link_recoveries: u32,
    /// Milliseconds the post-copy stream was broken, summed over the recoveries: from the break
    /// noticed to the resumed stream running (the guest runs on the destination meanwhile and
    /// blocks on each page it still lacks).
    #[serde(default)]
    pub paused_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("{0}")]
    Libvirt(String),
    #[error("invalid migration: {0}")]
    Config(String),
    #[error("QEMU reports the migration {status}: {desc}")]
    Failed { status: String, desc: String },
    #[error("post-copy stream lost and not recovered within {secs} s; the guest runs on the destination, still fetching pages")]
    RecoveryTimeout { secs: u64 },
    #[error(
        "pre-copy did not converge within {secs} s ({sent} bytes sent, {remaining} remaining); cancelled, the guest \
         keeps running on the source"
    )]
    NotConverged { secs: u64, sent: u64, remaining: u64 },
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// A free TCP port on the loopback interface for the migration stream.
fn free_port() -> Result<u16, MigrateError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| MigrateError::Config(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| MigrateError::Config(e.to_string()))?.port())
}

/// Migrates the guest in `src` into `dst` (started with [`Guest::incoming`]). On success the
/// guest runs in `dst` and `src` is left stopped (`postmigrate`) for the caller to kill; on a
/// cancelled pre-copy it keeps running in `src`.
pub fn migrate(
    src: &mut Guest,
    dst: &mut Guest,
    opts: &MigrateOptions,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<QemuReport, MigrateError> {
    if src.memory_mb != dst.memory_mb || src.accel != dst.accel {
        return Err(MigrateError::Config(format!(
            "destination must match the source: {} MiB/{} vs {} MiB/{}",
            src.memory_mb,
            src.accel.name(),
            dst.memory_mb,
            dst.accel.name()
        )));
    }
    let postcopy = opts.mode != Mode::Pre;
    let caps = json!({ "capabilities": [ { "capability": "postcopy-ram", "state": postcopy } ] });
    dst.qmp.execute("migrate-set-capabilities", caps.clone())?;
    src.qmp.execute("migrate-set-capabilities", caps)?;
    // Unlimited = far above any link; QEMU's own default cap is 128 MiB/s.
    let cap = opts.bandwidth.map_or(100_000_000_000u64, |b| b.max(1.0) as u64);
    let downtime_limit = if opts.mode == Mode::Hybrid {
        opts.hybrid_downtime_limit_ms.min(opts.downtime_limit_ms)
    } else {
        opts.downtime_limit_ms
    };
    src.qmp.execute(
        "migrate-set-parameters",
        json!({ "max-bandwidth": cap, "max-postcopy-bandwidth": cap, "downtime-limit": downtime_limit }),
    )?;
    let uri = format!("tcp:127.0.0.1:{}", free_port()?);
    dst.qmp.execute("migrate-incoming", json!({ "uri": uri }))?;
    let start = Instant::now();
    src.qmp.execute("migrate", json!({ "uri": uri }))?;

    let mut switched_at_pass = None;
    let mut switch_after_ms = None;
    if opts.mode == Mode::Post {
        src.qmp.execute("migrate-start-postcopy", Value::Null)?;
        switched_at_pass = Some(0);
        switch_after_ms = Some(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut dirty_at_pass: Vec<u64> = Vec::new();
    let mut last_pass = 0u64;
    let mut dirty_rate = 0.0;
    let mut link_recoveries = 0u32;
    let mut paused_ms = 0.0;
    let mut cut_done = false;
    let last = loop {
        let q = src.qmp.execute("query-migrate", Value::Null)?;
        let status = q["status"].as_str().unwrap_or("none").to_string();
        if status == "postcopy-active" && opts.cut_link_in_postcopy && !cut_done {
            src.qmp.execute("migrate-pause", Value::Null)?;
            cut_done = true;
        }
        if status == "postcopy-paused" {
            let broke = Instant::now();
            recover(src, dst, opts)?;
            paused_ms += broke.elapsed().as_secs_f64() * 1e3;
            link_recoveries += 1;
            continue;
        }
        let ram = &q["ram"];
        let pass = u(&ram["dirty-sync-count"]);
        let page = u(&ram["page-size"]).max(4096) as f64;
        let rate = f(&ram["dirty-pages-rate"]) * page;
        if rate > 0.0 {
            dirty_rate = rate;
        }
        let throughput = f(&ram["mbps"]) * 1e6 / 8.0;
        let remaining = u(&ram["remaining"]);
        if pass > last_pass {
            if pass >= 2 {
                dirty_at_pass.push(remaining);
            }
            last_pass = pass;
            if opts.mode == Mode::Hybrid
                && switched_at_pass.is_none()
                && status == "active"
                && hybrid_switch_due(opts, &dirty_at_pass, pass)
            {
                src.qmp.execute("migrate-start-postcopy", Value::Null)?;
                switched_at_pass = Some(pass);
                switch_after_ms = Some(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let phase = match status.as_str() {
            "setup" | "none" => Phase::Setup,
            "postcopy-active" | "postcopy-paused" | "postcopy-recover" => Phase::PostCopy,
            "completed" => Phase::Completed,
            _ => Phase::PreCopy,
        };
        let link = link_estimate(opts.bandwidth, throughput);
        let progress = Progress {
            phase,
            pass,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            bytes_sent: u(&ram["transferred"]),
            bytes_remaining: remaining,
            dirty_rate_bytes_per_s: rate,
            throughput_bytes_per_s: throughput,
            non_convergence: phase == Phase::PreCopy && pass >= 2 && link > 0.0 && rate >= link,
        };
        on_progress(&progress);
        match status.as_str() {
            "completed" => break q,
            "failed" | "cancelled" => {
                return Err(MigrateError::Failed {
                    status,
                    desc: q["error-desc"].as_str().unwrap_or("no reason given").to_string(),
                })
            }
            _ => {}
        }
        if phase != Phase::PostCopy && start.elapsed() > opts.timeout {
            let sent = progress.bytes_sent;
            src.qmp.execute("migrate_cancel", Value::Null)?;
            // Wait for the cancel to settle so the guest is running on the source again.
            let settle = Instant::now();
            while settle.elapsed() < Duration::from_secs(10) {
                let st = src.qmp.execute("query-migrate", Value::Null)?;
                if st["status"] != "cancelling" && st["status"] != "active" {
                    break;
                }
                std::thread::sleep(opts.poll);
            }
            return Err(MigrateError::NotConverged { secs: opts.timeout.as_secs(), sent, remaining });
        }
        std::thread::sleep(opts.poll);
    };
    // The destination finishes after the source's last page: wait until it runs on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let destination_state = loop {
        let st = dst.run_state()?;
        let done = dst.qmp.execute("query-migrate", Value::Null)?;
        if (st == "running" && done["status"] == "completed") || Instant::now() >= deadline {
            break st;
        }
        std::thread::sleep(opts.poll);
    };
    let ram = &last["ram"];
    // A switch requested just as pre-copy converged changes nothing: QEMU reports how many
    // bytes went in post-copy.
    let in_postcopy = opts.mode == Mode::Post || u(&ram["postcopy-bytes"]) > 0 || u(&ram["postcopy-requests"]) > 0;
    let qemu_downtime = f(&last["downtime"]);
    let downtime = corrected_downtime(in_postcopy, qemu_downtime, f(&last["total-time"]), switch_after_ms);
    if !in_postcopy {
        switched_at_pass = None;
        switch_after_ms = None;
    }
    Ok(QemuReport {
        mode: opts.mode,
        switch: (opts.mode == Mode::Hybrid).then_some(opts.switch),
        completed_as: if in_postcopy { "post-copy" } else { "pre-copy" }.to_string(),
        accel: src.accel.name().to_string(),
        qemu_version: src.qmp.version.clone(),
        memory_mb: src.memory_mb,
        bandwidth_bytes_per_s: opts.bandwidth,
        total_time_ms: f(&last["total-time"]),
        downtime_ms: downtime,
        qemu_downtime_ms: qemu_downtime,
        setup_time_ms: f(&last["setup-time"]),
        bytes_transferred: u(&ram["transferred"]),
        page_faults: u(&ram["postcopy-requests"]),
        passes: u(&ram["dirty-sync-count"]),
        switched_at_pass,
        switch_after_ms,
        dirty_at_pass,
        dirty_rate_bytes_per_s: dirty_rate,
        destination_state,
        link_recoveries,
        paused_ms,
    })
}

/// Whether a hybrid migration should switch to post-copy now that pass `pass` began, with
/// `dirty_at_pass` the dirty set at the start of each pass after the first ([`HybridSwitch`]).
pub(crate) fn hybrid_switch_due(opts: &MigrateOptions, dirty_at_pass: &[u64], pass: u64) -> bool {
    let n = dirty_at_pass.len();
    let stalled = n >= 2 && dirty_at_pass[n - 1] as f64 >= 0.8 * dirty_at_pass[n - 2] as f64;
    match opts.switch {
        HybridSwitch::AfterFirstPass => pass >= 2,
        HybridSwitch::AtStall => stalled || pass > opts.max_passes,
    }
}

/// What the link carries now: the cap, or less when QEMU measures less.
pub(crate) fn link_estimate(bandwidth: Option<f64>, throughput: f64) -> f64 {
    match bandwidth {
        Some(cap) if throughput > 0.0 => cap.min(throughput),
        Some(cap) => cap,
        None => throughput,
    }
}

/// The downtime of a migration from QEMU's figure: QEMU (10.0) keeps a post-copy switch's
/// downtime in whole milliseconds and treats 0 as "not recorded yet", so a switch under 1 ms is
/// reported as the whole post-copy phase; that figure becomes 0 (under 1 ms).
pub(crate) fn corrected_downtime(
    in_postcopy: bool,
    qemu_downtime: f64,
    total_ms: f64,
    switch_after_ms: Option<f64>,
) -> f64 {
    let postcopy_phase = total_ms - switch_after_ms.unwrap_or(0.0);
    if in_postcopy && qemu_downtime > 20.0 && qemu_downtime >= 0.9 * postcopy_phase {
        0.0
    } else {
        qemu_downtime
    }
}

/// Re-establishes a broken post-copy stream: both sides are in `postcopy-paused` (the guest runs
/// on the destination and blocks only on pages it still lacks). A new listening socket on the
/// destination (`migrate-recover`), then the source resumes into it (`migrate` with `resume`).
fn recover(src: &mut Guest, dst: &mut Guest, opts: &MigrateOptions) -> Result<(), MigrateError> {
    let deadline = Instant::now() + opts.recovery_timeout;
    // The destination's main loop may be blocked on a missing page, so only out-of-band
    // commands reach it; it accepts `migrate-recover` once it has noticed the broken stream.
    loop {
        let uri = format!("tcp:127.0.0.1:{}", free_port()?);
        match dst.qmp.execute_oob("migrate-recover", json!({ "uri": uri })) {
            Ok(_) => match src.qmp.execute("migrate", json!({ "uri": uri, "resume": true })) {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "post-copy resume failed; retrying"),
            },
            Err(QmpError::Command { desc, .. }) if desc.contains("paused") => {}
            Err(e) => tracing::warn!(error = %e, "migrate-recover failed; retrying"),
        }
        // Resumed when the source leaves the paused/recover states.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(2) {
            let st = src.qmp.execute("query-migrate", Value::Null)?;
            match st["status"].as_str().unwrap_or("") {
                "postcopy-active" | "completed" => return Ok(()),
                "failed" => {
                    return Err(MigrateError::Failed {
                        status: "failed".into(),
                        desc: st["error-desc"].as_str().unwrap_or("recovery failed").to_string(),
                    })
                }
                _ => std::thread::sleep(opts.poll),
            }
        }
        if Instant::now() >= deadline {
            return Err(MigrateError::RecoveryTimeout { secs: opts.recovery_timeout.as_secs() });
        }
    }
}

/// Measures the guest's dirty rate with QEMU's own sampler (`calc-dirty-rate`, page sampling
/// over `secs` seconds), in bytes per second.
pub fn measure_dirty_rate(guest: &mut Guest, secs: u64) -> Result<f64, MigrateError> {
    guest.qmp.execute("calc-dirty-rate", json!({ "calc-time": secs.max(1) }))?;
    let deadline = Instant::now() + Duration::from_secs(secs + 10);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let r = guest.qmp.execute("query-dirty-rate", Value::Null)?;
        if r["status"] == "measured" {
            return Ok(f(&r["dirty-rate"]) * 1024.0 * 1024.0);
        }
        if Instant::now() > deadline {
            return Err(MigrateError::Failed {
                status: "timeout".into(),
                desc: "calc-dirty-rate did not finish".into(),
            });
        }
    }
}

/// The mode the paper's model picks for this guest on a link of `bandwidth` bytes/s, from its
/// memory size and a measured dirty rate (see [`model::choose_mode`]).
pub fn model_mode(guest: &mut Guest, bandwidth: f64) -> Result<model::Choice, MigrateError> {
    let dirty = measure_dirty_rate(guest, 1)?;
    let p = model::Params::from_link(f64::from(guest.memory_mb) * 1024.0 * 1024.0, bandwidth, dirty);
    Ok(model::choose_mode(&p))
}
