//! Live migration through libvirt (the `virt` crate; `virt::sys` where its safe API lacks a
//! call): the same [`Mode`]s, options, progress samples and [`QemuReport`] as the QMP backend
//! ([`super::migrate`]), for nodes that run a libvirt daemon.
//!
//! - **pre**: `VIR_MIGRATE_LIVE`; libvirt drives QEMU's pre-copy. Not converging by `timeout`
//!   aborts the job (`virDomainAbortJob`): the guest keeps running on the source.
//! - **post**: `VIR_MIGRATE_POSTCOPY`, then `virDomainMigrateStartPostCopy` as soon as the job
//!   runs.
//! - **hybrid**: `VIR_MIGRATE_POSTCOPY` and the switch requested by us, by the same rule as the
//!   QMP backend ([`HybridSwitch`]): libvirt's own `--postcopy-after-precopy` is client-side and
//!   racy (pre-copy may converge first on a fast link), so the pass count is watched here.
//! - **Recovery**: a post-copy whose stream broke leaves the guest on the destination (it cannot
//!   go back: the source lacks its newest writes), libvirt's states "paused (post-copy failed)"
//!   at the source and "running (post-copy failed)" at the destination. The migration is resumed
//!   with the same flags + `VIR_MIGRATE_POSTCOPY_RESUME` (retried every 250 ms while the link is
//!   still down) until `recovery_timeout`, after which the call gives up waiting (the guest stays
//!   on the destination). A stream that breaks *during* the switch, before the destination took
//!   over, makes QEMU restart the guest on the source: the destination's incoming copy is then
//!   destroyed and the migration fails. Verified with a real link cut in the lab
//!   (`amvm lab migrate --cut-link-ms`); not reliable under TCG with libvirt 9.0 (docs/lab.md:
//!   libvirt sends `migrate-recover` in-band, and a resume attempt can block for good).
//!   Breaking the stream from here (`opts.cut_link_in_postcopy`) is refused.
//!
//! The source domain is persistent and is not undefined by libvirt (`VIR_MIGRATE_PERSIST_DEST`
//! without `VIR_MIGRATE_UNDEFINE_SOURCE`): after a post-copy only the source still holds the
//! completed job's statistics (the destination reports `Job type: None`). The report is read
//! from them, then the source's definition is removed, so the guest is defined on exactly one
//! node.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::{Domain, JobStats, MigrateParameters};
use virt::sys;

use super::migrate::{
    corrected_downtime, hybrid_switch_due, link_estimate, MigrateError, MigrateOptions, Phase, Progress, QemuReport,
};
use crate::memory::Mode;

/// A libvirt error as a migration error naming what was being done.
fn lv(what: &str, e: virt::error::Error) -> MigrateError {
    MigrateError::Libvirt(format!("{what}: {}", e.message()))
}

/// `major.minor.micro` from libvirt's `major * 1_000_000 + minor * 1000 + micro`.
fn version(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1000) % 1000, v % 1000)
}

/// The accelerator a domain runs under, from its XML (`type='kvm'` or `type='qemu'` = TCG).
pub fn domain_accel(xml: &str) -> &'static str {
    if xml.contains("<domain type='kvm'") || xml.contains("<domain type=\"kvm\"") {
        "kvm"
    } else {
        "tcg"
    }
}

/// Whether the domain is paused for post-copy (the source during post-copy) or running in
/// post-copy (the destination).
fn in_postcopy(dom: &Domain) -> bool {
    match dom.get_state() {
        Ok((state, reason)) => {
            (state == sys::VIR_DOMAIN_PAUSED
                && (reason == sys::VIR_DOMAIN_PAUSED_POSTCOPY as i32
                    || reason == sys::VIR_DOMAIN_PAUSED_POSTCOPY_FAILED as i32))
                || (state == sys::VIR_DOMAIN_RUNNING && reason == sys::VIR_DOMAIN_RUNNING_POSTCOPY as i32)
        }
        Err(_) => false,
    }
}

/// Whether the source domain is paused for a post-copy whose stream runs (not failed).
fn postcopy_running(dom: &Domain) -> bool {
    matches!(dom.get_state(), Ok((sys::VIR_DOMAIN_PAUSED, r)) if r == sys::VIR_DOMAIN_PAUSED_POSTCOPY as i32)
}

/// Pause between attempts to resume a broken post-copy stream.
const RESUME_RETRY: Duration = Duration::from_millis(250);

fn state_name(dom: &Domain) -> String {
    match dom.get_state() {
        Ok((sys::VIR_DOMAIN_RUNNING, _)) => "running".into(),
        Ok((sys::VIR_DOMAIN_PAUSED, r)) if r == sys::VIR_DOMAIN_PAUSED_POSTCOPY_FAILED as i32 => {
            "paused (post-copy failed)".into()
        }
        Ok((sys::VIR_DOMAIN_PAUSED, _)) => "paused".into(),
        Ok((sys::VIR_DOMAIN_SHUTOFF, _)) => "shut off".into(),
        Ok((s, r)) => format!("state {s} reason {r}"),
        Err(e) => format!("unknown ({})", e.message()),
    }
}

/// A domain's job statistics (`virDomainGetJobStats`). `virt` 0.4.3's own `get_job_stats` builds
/// a `Vec` from libvirt's pointer, which is null when the job has no statistics (no job yet, or
/// just ended): undefined behaviour (debug builds abort on it). Here the parameters are copied
/// and freed by libvirt's own `virTypedParamsFree`.
fn job_stats(dom: &Domain, flags: sys::virDomainGetJobStatsFlags) -> Result<JobStats, virt::error::Error> {
    let mut kind: libc::c_int = 0;
    let mut n: libc::c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    // SAFETY: valid domain pointer; libvirt allocates `params` (n entries) or leaves it null.
    let rc = unsafe { sys::virDomainGetJobStats(dom.as_ptr(), &mut kind, &mut params, &mut n, flags) };
    if rc < 0 {
        return Err(virt::error::Error::last_error());
    }
    if params.is_null() || n <= 0 {
        return Ok(JobStats { r#type: kind, ..Default::default() });
    }
    // SAFETY: libvirt returned `n` initialized parameters at `params`; they are copied (plain
    // data; strings stay owned by libvirt until the free below, after the conversion read them).
    let copied: Vec<sys::virTypedParameter> = unsafe { std::slice::from_raw_parts(params, n as usize) }.to_vec();
    let stats = JobStats::from((kind, copied));
    // SAFETY: frees what libvirt allocated, exactly once.
    unsafe { sys::virTypedParamsFree(params, n) };
    Ok(stats)
}

/// A libvirt call's return code as a result: below 0, libvirt's last error.
fn checked(rc: libc::c_int) -> Result<(), String> {
    if rc < 0 {
        Err(virt::error::Error::last_error().message().to_string())
    } else {
        Ok(())
    }
}

/// Starts post-copy on an outgoing migration (`virDomainMigrateStartPostCopy`).
fn start_postcopy(dom: &Domain) -> Result<(), String> {
    // SAFETY: `dom` holds a valid domain pointer for the duration of the call.
    checked(unsafe { sys::virDomainMigrateStartPostCopy(dom.as_ptr(), 0) })
}

/// Runs `virDomainMigrate3` on its own connections in a thread (the call blocks until the
/// migration ends); the result arrives on the returned channel.
fn spawn_migrate(
    src_uri: &str,
    dst_uri: &str,
    name: &str,
    params: MigrateParameters,
    flags: u32,
) -> mpsc::Receiver<Result<(), String>> {
    let (tx, rx) = mpsc::channel();
    let (src_uri, dst_uri, name) = (src_uri.to_string(), dst_uri.to_string(), name.to_string());
    std::thread::spawn(move || {
        let run = || -> Result<(), String> {
            let src =
                Connect::open(Some(&src_uri)).map_err(|e| format!("cannot connect to {src_uri}: {}", e.message()))?;
            let dst =
                Connect::open(Some(&dst_uri)).map_err(|e| format!("cannot connect to {dst_uri}: {}", e.message()))?;
            let dom = Domain::lookup_by_name(&src, &name).map_err(|e| e.message().to_string())?;
            dom.migrate3(&dst, params, flags).map(drop).map_err(|e| e.message().to_string())
        };
        let _ = tx.send(run());
    });
    rx
}

fn params(opts: &MigrateOptions, uri: Option<&str>) -> MigrateParameters {
    MigrateParameters {
        // libvirt's pre-copy cap is in MiB/s, the post-copy cap in bytes/s.
        bandwidth: opts.bandwidth.map(|b| ((b / 1_048_576.0).ceil() as u64).max(1)),
        bandwidth_postcopy: opts.bandwidth.map(|b| b.max(1.0) as u64),
        uri: uri.map(str::to_string),
        ..Default::default()
    }
}

/// Live-migrates domain `name` from the libvirt daemon at `src_uri` to the one at `dst_uri`
/// (`migrate_uri`: where the migration stream goes, e.g. `tcp://node2`; `None` = the
/// destination's host name). On success the guest runs on the destination, defined there only;
/// on a cancelled pre-copy it keeps running on the source.
pub fn migrate_domain(
    src_uri: &str,
    dst_uri: &str,
    name: &str,
    migrate_uri: Option<&str>,
    opts: &MigrateOptions,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<QemuReport, MigrateError> {
    // Errors come back as values; libvirt's default handler would also print each to stderr
    // (including the expected ones while polling a domain that just left).
    virt::error::clear_error_callback();
    let src = Connect::open(Some(src_uri)).map_err(|e| lv(&format!("cannot connect to {src_uri}"), e))?;
    let dst = Connect::open(Some(dst_uri)).map_err(|e| lv(&format!("cannot connect to {dst_uri}"), e))?;
    let dom = Domain::lookup_by_name(&src, name).map_err(|e| lv(&format!("no domain {name:?} at {src_uri}"), e))?;
    if !dom.is_active().unwrap_or(false) {
        return Err(MigrateError::Config(format!("domain {name:?} is not running at {src_uri}")));
    }
    if opts.cut_link_in_postcopy {
        return Err(MigrateError::Config(
            "breaking the stream from the backend is not supported through libvirt (cut the link instead: `amvm lab migrate --cut-link-ms`; the QMP backend uses migrate-pause)".into(),
        ));
    }
    if src_uri == dst_uri {
        return Err(MigrateError::Config("source and destination are the same node".into()));
    }
    let info = dom.get_info().map_err(|e| lv("domain info", e))?;
    let xml = dom.get_xml_desc(0).map_err(|e| lv("domain XML", e))?;
    let accel = domain_accel(&xml).to_string();
    let qemu_version = src.get_hyp_version().map(version).unwrap_or_default();
    let postcopy = opts.mode != Mode::Pre;
    let mut flags = sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_PERSIST_DEST;
    if postcopy {
        flags |= sys::VIR_MIGRATE_POSTCOPY;
    }
    let downtime_limit = if opts.mode == Mode::Hybrid {
        opts.hybrid_downtime_limit_ms.min(opts.downtime_limit_ms)
    } else {
        opts.downtime_limit_ms
    };

    // QEMU's `downtime-limit` holds for the next migration (libvirt sets only the parameters its
    // migration API names); set again once the job runs, in case it was reset.
    let mut downtime_set = dom.migrate_set_max_downtime(downtime_limit, 0).is_ok();
    let start = Instant::now();
    let mut done = spawn_migrate(src_uri, dst_uri, name, params(opts, migrate_uri), flags);
    let mut switched_at_pass = None;
    let mut switch_after_ms = None;
    let mut dirty_at_pass: Vec<u64> = Vec::new();
    let mut last_pass = 0u64;
    let mut dirty_rate = 0.0;
    let mut seen_active = false;
    let mut link_recoveries = 0u32;
    // The post-copy stream broke at this instant and has not been resumed yet.
    let mut broken_since: Option<Instant> = None;
    let mut paused_ms = 0.0;
    loop {
        let finished = match done.try_recv() {
            Ok(r) => Some(r),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err("the migration thread ended without a result".into())),
        };
        let post = in_postcopy(&dom);
        match finished {
            Some(Ok(())) => {
                if let Some(since) = broken_since.take() {
                    link_recoveries += 1;
                    paused_ms += since.elapsed().as_secs_f64() * 1e3;
                }
                break;
            }
            Some(Err(e)) if post && matches!(dom.get_state(), Ok((sys::VIR_DOMAIN_RUNNING, _))) => {
                // The stream broke during the switch, before the destination took over: QEMU
                // restarted the guest on the source. The destination's incoming domain is stale
                // (and may be stuck on pages that will never come): it goes, so the guest runs
                // on one node only.
                let removed = Domain::lookup_by_name(&dst, name).map(|d| d.destroy().is_ok()).unwrap_or(false);
                return Err(MigrateError::Failed {
                    status: "failed".into(),
                    desc: format!(
                        "the stream broke during the switch to post-copy ({e}); the guest keeps running on the \
                         source{}",
                        if removed { ", the destination's incoming copy was destroyed" } else { "" }
                    ),
                });
            }
            Some(Err(e)) if post || broken_since.is_some() => {
                // The stream broke in post-copy: the guest lives on the destination, paused
                // where it lacks pages; it cannot go back (the source lacks its newest writes).
                // Resume into it (same flags + VIR_MIGRATE_POSTCOPY_RESUME) until the recovery
                // timeout; while the link is still down each attempt fails at once.
                let since = *broken_since.get_or_insert_with(Instant::now);
                if since.elapsed() > opts.recovery_timeout {
                    return Err(MigrateError::RecoveryTimeout { secs: opts.recovery_timeout.as_secs() });
                }
                tracing::info!(error = %e, state = %state_name(&dom), "post-copy stream broken; resuming");
                std::thread::sleep(RESUME_RETRY);
                done = spawn_migrate(
                    src_uri,
                    dst_uri,
                    name,
                    params(opts, migrate_uri),
                    flags | sys::VIR_MIGRATE_POSTCOPY_RESUME,
                );
                continue;
            }
            Some(Err(e)) => {
                if start.elapsed() > opts.timeout && switched_at_pass.is_none() {
                    let st = job_stats(&dom, sys::VIR_DOMAIN_JOB_STATS_COMPLETED).unwrap_or_default();
                    return Err(MigrateError::NotConverged {
                        secs: opts.timeout.as_secs(),
                        sent: st.mem_processed.unwrap_or(0),
                        remaining: st.mem_remaining.unwrap_or(0),
                    });
                }
                return Err(MigrateError::Failed { status: "failed".into(), desc: e });
            }
            None => {}
        }
        if let Some(since) = broken_since.filter(|s| s.elapsed() > opts.recovery_timeout) {
            // A resume attempt that does not return: libvirt 9.0 asks the destination QEMU for
            // `migrate-recover` in-band, which never runs while a vCPU thread that faulted on a
            // missing page holds QEMU's main lock (TCG delivering an interrupt, docs/lab.md).
            return Err(MigrateError::Failed {
                status: "post-copy paused".into(),
                desc: format!(
                    "not resumed within {:.0} s of the break (state at the source: {}); the guest stays on the \
                     destination",
                    since.elapsed().as_secs_f64(),
                    state_name(&dom)
                ),
            });
        }
        if broken_since.is_none() && state_name(&dom).contains("post-copy failed") {
            // Noticed here before the migration call returns its error.
            broken_since = Some(Instant::now());
        } else if let Some(since) = broken_since {
            if postcopy_running(&dom) {
                // A resume took effect: the stream runs again.
                link_recoveries += 1;
                paused_ms += since.elapsed().as_secs_f64() * 1e3;
                broken_since = None;
            }
        }
        let job = job_stats(&dom, 0).unwrap_or_default();
        let active = job.r#type != sys::VIR_DOMAIN_JOB_NONE as i32;
        seen_active |= active;
        if active && !downtime_set {
            downtime_set = dom.migrate_set_max_downtime(downtime_limit, 0).is_ok();
        }
        let pass = job.mem_iteration.unwrap_or(0);
        let remaining = job.mem_remaining.unwrap_or(0);
        let rate = job.mem_dirty_rate.unwrap_or(0) as f64 * job.mem_page_size.unwrap_or(4096).max(1) as f64;
        if rate > 0.0 {
            dirty_rate = rate;
        }
        if active && opts.mode == Mode::Post && switched_at_pass.is_none() && start_postcopy(&dom).is_ok() {
            switched_at_pass = Some(0);
            switch_after_ms = Some(start.elapsed().as_secs_f64() * 1e3);
        }
        if pass > last_pass {
            if pass >= 2 {
                dirty_at_pass.push(remaining);
            }
            last_pass = pass;
            if opts.mode == Mode::Hybrid
                && switched_at_pass.is_none()
                && !post
                && hybrid_switch_due(opts, &dirty_at_pass, pass)
            {
                match start_postcopy(&dom) {
                    Ok(()) => {
                        switched_at_pass = Some(pass);
                        switch_after_ms = Some(start.elapsed().as_secs_f64() * 1e3);
                    }
                    Err(e) => tracing::debug!(error = %e, "post-copy switch refused"),
                }
            }
        }
        let phase = if post {
            Phase::PostCopy
        } else if !active && seen_active {
            Phase::Completed
        } else if !active {
            Phase::Setup
        } else {
            Phase::PreCopy
        };
        let throughput = job.mem_bps.unwrap_or(0) as f64;
        let link = link_estimate(opts.bandwidth, throughput);
        let progress = Progress {
            phase,
            pass,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            bytes_sent: job.mem_processed.unwrap_or(0),
            bytes_remaining: remaining,
            dirty_rate_bytes_per_s: rate,
            throughput_bytes_per_s: throughput,
            non_convergence: phase == Phase::PreCopy && pass >= 2 && link > 0.0 && rate >= link,
        };
        on_progress(&progress);
        if phase != Phase::PostCopy && switched_at_pass.is_none() && start.elapsed() > opts.timeout {
            // Pre-copy that does not converge: abort; the migration thread then returns the
            // job's error and the branch above reports non-convergence.
            // SAFETY: `dom` holds a valid domain pointer for the duration of the call.
            if let Err(e) = checked(unsafe { sys::virDomainAbortJob(dom.as_ptr()) }) {
                tracing::warn!(error = %e, "could not abort the migration job");
            }
        }
        std::thread::sleep(opts.poll);
    }
    let stats: JobStats =
        job_stats(&dom, sys::VIR_DOMAIN_JOB_STATS_COMPLETED).map_err(|e| lv("completed job statistics", e))?;
    let dst_dom = Domain::lookup_by_name(&dst, name).map_err(|e| lv("the migrated domain at the destination", e))?;
    // The guest now runs on the destination: the stale definition on the source goes.
    if let Err(e) = dom.undefine() {
        tracing::warn!(error = %e.message(), "cannot remove the source's definition");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let destination_state = loop {
        let st = state_name(&dst_dom);
        if st == "running" && !in_postcopy(&dst_dom) || Instant::now() >= deadline {
            break st;
        }
        std::thread::sleep(opts.poll);
    };
    let page_faults = stats.mem_postcopy_reqs.unwrap_or(0);
    let total = stats.time_elapsed.unwrap_or(0) as f64;
    let completed_post =
        opts.mode == Mode::Post || page_faults > 0 || switched_at_pass.is_some() && link_recoveries > 0;
    let qemu_downtime = stats.downtime.unwrap_or(0) as f64;
    if !completed_post {
        switched_at_pass = None;
        switch_after_ms = None;
    }
    Ok(QemuReport {
        mode: opts.mode,
        switch: (opts.mode == Mode::Hybrid).then_some(opts.switch),
        completed_as: if completed_post { "post-copy" } else { "pre-copy" }.to_string(),
        accel,
        qemu_version,
        memory_mb: (info.max_mem / 1024) as u32,
        bandwidth_bytes_per_s: opts.bandwidth,
        total_time_ms: total,
        downtime_ms: corrected_downtime(completed_post, qemu_downtime, total, switch_after_ms),
        qemu_downtime_ms: qemu_downtime,
        setup_time_ms: stats.setup_time.unwrap_or(0) as f64,
        bytes_transferred: stats.mem_processed.or(stats.data_processed).unwrap_or(0),
        page_faults,
        passes: stats.mem_iteration.unwrap_or(0),
        switched_at_pass,
        switch_after_ms,
        dirty_at_pass,
        dirty_rate_bytes_per_s: dirty_rate,
        destination_state,
        link_recoveries,
        paused_ms,
    })
}

/// Cancels the migration job of domain `name` (a UUID or a name) at the daemon `uri`
/// (`virDomainAbortJob`). A pre-copy job ends and the guest keeps running on the source; libvirt
/// refuses to abort once post-copy has started (the guest then lives on the destination).
pub fn abort_migration(uri: &str, name: &str) -> Result<(), MigrateError> {
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(uri)).map_err(|e| lv(&format!("cannot connect to {uri}"), e))?;
    let dom = Domain::lookup_by_uuid_string(&conn, name)
        .or_else(|_| Domain::lookup_by_name(&conn, name))
        .map_err(|e| lv(&format!("no domain {name:?} at {uri}"), e))?;
    // SAFETY: `dom` holds a valid domain pointer for the duration of the call.
    checked(unsafe { sys::virDomainAbortJob(dom.as_ptr()) }).map_err(|e| MigrateError::Config(format!("abort: {e}")))
}

/// The running domain `name` at `uri` and the flags that change it live and, when it has a
/// persistent definition, in that definition too (so a later migration's definition carries it).
fn live_and_config(uri: &str, name: &str) -> Result<(Domain, u32), String> {
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(uri)).map_err(|e| format!("cannot connect to {uri}: {}", e.message()))?;
    let dom =
        Domain::lookup_by_name(&conn, name).map_err(|e| format!("no domain {name:?} at {uri}: {}", e.message()))?;
    let mut flags = sys::VIR_DOMAIN_AFFECT_LIVE;
    if dom.is_persistent().unwrap_or(false) {
        flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    Ok((dom, flags))
}

/// Hot-plugs a device (`<disk>` XML) into the running domain `name` at `uri`, and into its
/// persistent definition when it has one.
pub fn attach_device(uri: &str, name: &str, xml: &str) -> Result<(), String> {
    let (dom, flags) = live_and_config(uri, name)?;
    dom.attach_device_flags(xml, flags).map(drop).map_err(|e| format!("attach to {name}: {}", e.message()))
}

/// Unplugs a device (same XML as attached) from domain `name`, live and from its definition.
pub fn detach_device(uri: &str, name: &str, xml: &str) -> Result<(), String> {
    let (dom, flags) = live_and_config(uri, name)?;
    dom.detach_device_flags(xml, flags).map(drop).map_err(|e| format!("detach from {name}: {}", e.message()))
}

/// Whether domain `name` is active at `uri`, and whether a job (a migration, out or in) runs on
/// it there. `(false, false)` when the daemon has no such domain.
pub fn domain_activity(uri: &str, name: &str) -> Result<(bool, bool), String> {
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(uri)).map_err(|e| format!("cannot connect to {uri}: {}", e.message()))?;
    let Ok(dom) = Domain::lookup_by_name(&conn, name) else { return Ok((false, false)) };
    let active = dom.is_active().unwrap_or(false);
    let job = active && dom.get_job_info().is_ok_and(|j| j.r#type != sys::VIR_DOMAIN_JOB_NONE as i32);
    // Incoming, and post-copy's paused source: the state says migration.
    let paused_for_migration = dom.get_state().is_ok_and(|(st, reason)| {
        st == sys::VIR_DOMAIN_PAUSED
            && [sys::VIR_DOMAIN_PAUSED_MIGRATION, sys::VIR_DOMAIN_PAUSED_POSTCOPY].contains(&(reason as u32))
    });
    Ok((active, job || (active && paused_for_migration)))
}

/// Makes sure the libvirt daemon at `uri` holds the iSCSI CHAP secret `chap.secret_usage()`
/// with `chap`'s password (defined when missing, its value set again otherwise), so that a
/// guest's `<auth>` resolves there — on the node a volume is attached on, and on a migration's
/// destination before the incoming guest opens the disk.
pub fn ensure_iscsi_secret(uri: &str, chap: &crate::volume::Chap) -> Result<(), String> {
    use virt::secret::Secret;
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(uri)).map_err(|e| format!("cannot connect to {uri}: {}", e.message()))?;
    let usage = chap.secret_usage();
    let secret = match Secret::lookup_by_usage(&conn, sys::VIR_SECRET_USAGE_TYPE_ISCSI as i32, &usage) {
        Ok(s) => s,
        Err(_) => {
            let xml = format!(
                "<secret ephemeral='no' private='yes'><description>AMVM volumes: CHAP of {}</description>\
                 <usage type='iscsi'><target>{usage}</target></usage></secret>",
                chap.user
            );
            Secret::define_xml(&conn, &xml, 0)
                .map_err(|e| format!("define the CHAP secret {usage} at {uri}: {}", e.message()))?
        }
    };
    secret
        .set_value(chap.password.as_bytes(), 0)
        .map_err(|e| format!("set the CHAP secret {usage} at {uri}: {}", e.message()))
}

/// Grows disk `target_dev` of the running domain `name` at `uri` to `bytes` (QEMU's
/// `block_resize`; the guest sees a capacity change), after its volume was extended.
pub fn block_resize(uri: &str, name: &str, target_dev: &str, bytes: u64) -> Result<(), String> {
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(uri)).map_err(|e| format!("cannot connect to {uri}: {}", e.message()))?;
    let dom =
        Domain::lookup_by_name(&conn, name).map_err(|e| format!("no domain {name:?} at {uri}: {}", e.message()))?;
    dom.block_resize(target_dev, bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        .map(drop)
        .map_err(|e| format!("resize {target_dev} of {name} to {bytes} bytes: {}", e.message()))
}

/// The capacity (bytes) QEMU sees of disk `target_dev` of domain `name` at `uri`.
pub fn block_capacity(uri: &str, name: &str, target_dev: &str) -> Result<u64, String> {
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(uri)).map_err(|e| format!("cannot connect to {uri}: {}", e.message()))?;
    let dom =
        Domain::lookup_by_name(&conn, name).map_err(|e| format!("no domain {name:?} at {uri}: {}", e.message()))?;
    dom.get_block_info(target_dev, 0).map(|b| b.capacity).map_err(|e| e.message().to_string())
}

/// The guest disks (`<target dev=…>`) of domain `name` in its live XML.
pub fn disk_targets(uri: &str, name: &str) -> Result<Vec<String>, String> {
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(uri)).map_err(|e| format!("cannot connect to {uri}: {}", e.message()))?;
    let dom =
        Domain::lookup_by_name(&conn, name).map_err(|e| format!("no domain {name:?} at {uri}: {}", e.message()))?;
    let xml = dom.get_xml_desc(0).map_err(|e| e.message().to_string())?;
    Ok(xml.split("<target dev='").skip(1).filter_map(|r| r.split('\'').next()).map(str::to_string).collect())
}
