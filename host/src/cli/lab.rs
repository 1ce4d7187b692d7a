//! `amvm lab`: several libvirt nodes on this machine, their guests, and live migration between
//! them (the work is in `crate::lab`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use amvm_engine::qemu::{HybridSwitch, MigrateOptions};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::migrate::parse_rate;
use crate::lab::{self, LabConfig, LabState};

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Lab directory: its state file, each node's private libvirt directories and consoles.
    #[arg(long, global = true, default_value = lab::DEFAULT_DIR)]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start N libvirt nodes (one namespace set each, joined by a bridge) with K guests each.
    /// Cleans up a previous lab in the same directory first. Needs root.
    #[command(after_help = "Example: amvm lab up --nodes 3 --vms-per-node 1\n\
        The guest comes from scripts/build-guest.sh (default target/guest). KVM is used when it boots a \
        guest here, else TCG (said so).")]
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 1)]
        vms_per_node: usize,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
        /// The guests' workload as kernel command-line settings (docs/lab.md lists them).
        #[arg(long, default_value = "amvm.mode=memory amvm.mem=64 amvm.dirty=8 amvm.hot=20 amvm.load=10")]
        workload: String,
        /// Directory with the guest's vmlinuz and initrd.img.
        #[arg(long, default_value = "target/guest")]
        image: PathBuf,
        /// First three octets of the lab network: bridge .1, node i at .(10+i).
        #[arg(long, default_value = "10.77.0")]
        subnet: String,
        /// Prefix of the lab's interface names (bridge PREFIXbr, veths PREFIX1…).
        #[arg(long, default_value = "amvm")]
        ifprefix: String,
        /// Do not try KVM; boot the guests under TCG.
        #[arg(long)]
        tcg: bool,
        /// Start no agents and no controller (nodes and guests only).
        #[arg(long)]
        no_agents: bool,
        /// Start the agents but no controller.
        #[arg(long)]
        no_controller: bool,
        /// The lab controller's API and dashboard address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The controller's strategy: `lab` (THR 0.6/0.3 + MMT + PABFD, a 5-cycle VM cool-down;
        /// docs/lab.md), a built-in name or a strategy TOML file.
        #[arg(long, default_value = "lab")]
        strategy: String,
        /// Milliseconds between the controller's decision cycles.
        #[arg(long, default_value_t = 3000)]
        step_ms: u64,
        /// Seconds between agent reports.
        #[arg(long, default_value_t = 2)]
        report_interval_s: u32,
        /// Migration mode of a move whose plan names none: pre | post | hybrid. The strategy's
        /// migration-mode policy (the built-in `model` by default) names one for every move it
        /// plans; this is used when it and its fallback failed, and for hand migrations.
        #[arg(long, default_value = "hybrid")]
        migration_mode: String,
        /// The disk-array driver's configuration (docs/volumes.md): the lab controller then moves
        /// each guest's attached volumes with it, places such guests only on nodes that reach
        /// the array, and counts the volumes in their migration cost.
        #[arg(long, value_name = "FILE")]
        volumes: Option<std::path::PathBuf>,
    },
    /// Nodes by name, each with its guests (state, memory, last heartbeat).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Set a guest's CPU load (percent of its vCPU), e.g. to overload its node on purpose.
    Load { vm: String, level: u32 },
    /// Live-migrate a guest to another node through libvirt and print the migration report.
    Migrate {
        vm: String,
        /// Destination node (e.g. node2).
        #[arg(long)]
        to: String,
        /// pre | post | hybrid (pre-copy passes, then post-copy when the dirty set stops shrinking).
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// Link cap for both phases, e.g. 1gbit, 400mbit, 50MB (default: uncapped).
        #[arg(long)]
        bandwidth: Option<String>,
        /// Hybrid switch rule: at-stall (ours) or after-first-pass (virsh --postcopy-after-precopy).
        #[arg(long, default_value = "at-stall")]
        switch: String,
        /// Pre-copy still running after this many seconds is cancelled (the guest stays put).
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
        /// Fault injection (post or hybrid): once post-copy has started, cut the link between the
        /// source and the destination for this many milliseconds (packet filter in the source
        /// node: TCP refused with resets, the rest dropped), then restore it. The broken post-copy
        /// is resumed (VIR_MIGRATE_POSTCOPY_RESUME) once the link is back; the report gives
        /// link_recoveries, paused_ms and the cut's timing.
        #[arg(long, value_name = "MS")]
        cut_link_ms: Option<u64>,
        /// With --cut-link-ms: cut once post-copy has run this long (ms). Right at the switch the
        /// destination still lacks the guest's hottest kernel pages; a TCG vCPU faulting on one
        /// while delivering an interrupt holds QEMU's main lock, and libvirt's in-band
        /// migrate-recover then never runs (docs/lab.md).
        #[arg(long, value_name = "MS", default_value_t = 500)]
        cut_after_ms: u64,
        /// How long a broken post-copy may take to resume before the command gives up waiting
        /// (the guest stays on the destination either way).
        #[arg(long, default_value_t = 60)]
        recovery_timeout_s: u64,
        #[arg(long)]
        json: bool,
    },
    /// Stop every process of the lab and remove its namespaces, interfaces and directory.
    Down,
}

pub fn run(a: LabArgs) -> Result<ExitCode> {
    match a.command {
        LabCommand::Up {
            nodes,
            vms_per_node,
            memory_mib,
            workload,
            image,
            subnet,
            ifprefix,
            tcg,
            no_agents,
            no_controller,
            listen,
            strategy,
            step_ms,
            report_interval_s,
            migration_mode,
            volumes,
        } => {
            lab::parse_mode(&migration_mode)?;
            anyhow::ensure!(step_ms >= 100, "--step-ms must be at least 100");
            anyhow::ensure!((1..=3600).contains(&report_interval_s), "--report-interval-s must be 1..=3600");
            let strategy = if std::path::Path::new(&strategy).is_file() {
                std::fs::canonicalize(&strategy)?.to_string_lossy().into_owned()
            } else {
                strategy
            };
            let plane = (!no_agents).then_some(lab::live::ControlPlane {
                listen,
                strategy,
                step_ms,
                report_interval_s,
                mode: migration_mode,
                controller: !no_controller,
                volumes: volumes.map(std::fs::canonicalize).transpose().context("--volumes")?,
            });
            let cfg = LabConfig {
                dir: a.dir,
                nodes,
                vms_per_node,
                memory_mib,
                workload,
                image,
                subnet,
                ifprefix,
                try_kvm: !tcg,
                plane,
            };
            let state = lab::up(&cfg, &mut |line| eprintln!("lab: {line}"))?;
            println!(
                "lab up: {} nodes, {} guests, accelerator {}{}",
                state.nodes.len(),
                state.vms.len(),
                state.accel,
                if state.accel_note.is_empty() { String::new() } else { format!(" ({})", state.accel_note) }
            );
            if let Some(api) = &state.api {
                println!("  {api}/   the dashboard (token: {}/admin.token)", state.dir.display());
            }
            println!("  amvm lab status            nodes and guests");
            println!("  amvm lab migrate vm1 --to node2 --mode hybrid");
            println!("  amvm lab down              remove everything");
        }
        LabCommand::Status { json } => {
            let state = LabState::load(&a.dir)?;
            let st = lab::status(&state);
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!("lab {} (accelerator {})", st.dir.display(), st.accel);
                if let Some(api) = &st.api {
                    println!("controller {api}/");
                }
                for n in &st.nodes {
                    println!("{} {} {} — {} guests", n.name, n.ip, n.state, n.vms.len());
                    for v in &n.vms {
                        let hb = v.heartbeat.as_ref().map_or("no heartbeat".to_string(), |h| {
                            format!("heartbeat {} ({} load {} %, {} MB/s dirtied)", h.seq, h.mode, h.load, h.dirty_mbps)
                        });
                        println!("  {} {} {} MiB, {hb}", v.name, v.state, v.memory_mib);
                    }
                }
            }
        }
        LabCommand::Load { vm, level } => {
            let state = LabState::load(&a.dir)?;
            let n = lab::set_load(&state, &vm, level)?;
            println!("{vm} on {}: load {level} %", n.name);
        }
        LabCommand::Migrate {
            vm,
            to,
            mode,
            bandwidth,
            switch,
            timeout_s,
            cut_link_ms,
            cut_after_ms,
            recovery_timeout_s,
            json,
        } => {
            let state = LabState::load(&a.dir)?;
            let mut opts = MigrateOptions::new(lab::parse_mode(&mode)?);
            opts.bandwidth = bandwidth.as_deref().map(parse_rate).transpose()?;
            opts.switch = match switch.as_str() {
                "at-stall" => HybridSwitch::AtStall,
                "after-first-pass" => HybridSwitch::AfterFirstPass,
                other => anyhow::bail!("unknown switch rule {other:?}: at-stall or after-first-pass"),
            };
            opts.timeout = Duration::from_secs(timeout_s);
            opts.recovery_timeout = Duration::from_secs(recovery_timeout_s);
            if let Some(ms) = cut_link_ms {
                anyhow::ensure!((1..=600_000).contains(&ms), "--cut-link-ms must be 1..=600000");
            }
            let mut last_phase = None;
            let cut = cut_link_ms.map(|ms| lab::LinkCutPlan {
                after: Duration::from_millis(cut_after_ms),
                length: Duration::from_millis(ms),
            });
            let m = lab::migrate(&state, &vm, &to, &opts, cut, &mut |p| {
                if !json && last_phase != Some(p.phase) {
                    eprintln!(
                        "lab: {vm}: {:?} at {:.0} ms (pass {}, {} MB sent)",
                        p.phase,
                        p.elapsed_ms,
                        p.pass,
                        p.bytes_sent / 1_000_000
                    );
                    last_phase = Some(p.phase);
                }
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                let report = &m.report;
                println!(
                    "{vm}: {} → {}, {} (completed as {}): {:.0} ms total, {:.1} ms downtime, {:.1} MB sent, {} page \
                     faults, {} passes",
                    m.from,
                    m.to,
                    mode,
                    report.completed_as,
                    report.total_time_ms,
                    report.downtime_ms,
                    report.bytes_transferred as f64 / 1e6,
                    report.page_faults,
                    report.passes,
                );
                if let Some(c) = &m.link_cut {
                    println!(
                        "  link {}–{} cut {:.0} ms after the start for {:.0} ms; post-copy stream broken for {:.0} ms, \
                         resumed {}×",
                        c.node, c.peer, c.cut_after_ms, c.lasted_ms, report.paused_ms, report.link_recoveries
                    );
                }
            }
        }
        LabCommand::Down => {
            for line in lab::down(&a.dir)? {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
