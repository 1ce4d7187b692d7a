//! `amvm volume`: volumes on the disk array (this machine's own tgtd by default) and their
//! attachment to lab guests (the work is in `amvm_engine::volume` and `crate::volume`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use amvm_engine::memory::Mode;
use amvm_engine::qemu::MigrateOptions;
use amvm_engine::volume::{config, parse_size, ArrayConfig, DiskArray, TgtArray};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::controller::store::Store;
use crate::lab::{self, LabState};
use crate::volume::{self, lab_host::LabHost, Faults};

#[derive(Debug, Args)]
pub struct VolumeArgs {
    /// The volume driver's configuration (re-read at every call; docs/volumes.md). When the
    /// default file does not exist it is created for this machine's own tgtd (portal
    /// 127.0.0.1:3260, management port 0, pool /var/lib/amvm/volumes).
    #[arg(long, global = true, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The controller's database (attachments and the move journal).
    #[arg(long, global = true, default_value = "/var/lib/amvm/state.db")]
    pub db: PathBuf,
    /// The lab whose guests volumes attach to.
    #[arg(long, global = true, default_value = lab::DEFAULT_DIR)]
    pub lab: PathBuf,
    #[command(subcommand)]
    pub command: VolumeCommand,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a file-backed LUN of its own iSCSI target).
    #[command(after_help = "Example: amvm volume create data1 --size 64M")]
    Create {
        name: String,
        /// Size: bytes or with K, M, G, T (powers of 1024).
        #[arg(long)]
        size: String,
        /// Pool (default: the configuration's default_pool).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Volumes with size, pool, mapping (ACL) and attachment.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Attach a volume to a running lab guest (hot-plug through QEMU's iSCSI initiator).
    Attach {
        name: String,
        #[arg(long)]
        vm: String,
        /// The guest's disk name.
        #[arg(long, default_value = "vdb")]
        dev: String,
    },
    /// Detach a volume from its guest and unmap it.
    Detach { name: String },
    /// Delete a volume (refused while mapped, unless --force).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Grow a volume; an attached guest is told (QEMU resizes its disk, the guest sees it).
    Extend {
        name: String,
        #[arg(long)]
        size: String,
    },
    /// Live-migrate a volume's guest to another lab node, moving the volume's mapping with it.
    Migrate {
        name: String,
        #[arg(long)]
        to: String,
        /// pre | post | hybrid.
        #[arg(long, default_value = "pre")]
        mode: String,
    },
    /// Finish volume moves left open (a crashed controller, an unmap that kept failing).
    Resolve,
    /// The move history (all guests, or one).
    History {
        #[arg(long)]
        vm: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// The driver, creating the default configuration for this machine's tgtd when it is missing.
fn array(path: &Path) -> Result<TgtArray> {
    if !path.exists() && path == Path::new(config::DEFAULT_PATH) {
        let cfg = ArrayConfig::local("127.0.0.1:3260", 0, Path::new("/var/lib/amvm/volumes"));
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        std::fs::write(path, cfg.to_toml()).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("amvm volume: wrote {} for this machine's own tgtd", path.display());
    }
    Ok(TgtArray::new(path))
}

fn store(path: &Path) -> Result<Store> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    Ok(Store::open(path)?)
}

fn lab_host(dir: &Path) -> Result<LabHost> {
    Ok(LabHost { state: LabState::load(dir)?, opts: MigrateOptions::new(Mode::Pre) })
}

pub fn run(a: VolumeArgs) -> Result<ExitCode> {
    let arr = array(&a.config)?;
    match a.command {
        VolumeCommand::Create { name, size, pool } => {
            let v = arr.create(&name, parse_size(&size)?, pool.as_deref())?;
            println!("created {} ({} bytes, pool {}, {})", v.name, v.size_bytes, v.pool, v.iqn);
        }
        VolumeCommand::List { json } => {
            let vols = arr.list()?;
            let st = store(&a.db)?;
            let rows: Vec<serde_json::Value> = vols
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "name": v.name, "iqn": v.iqn, "size_bytes": v.size_bytes, "pool": v.pool,
                        "path": v.path, "mapped_to": v.acl, "sessions": v.sessions.len(),
                        "attachment": st.attachment(&v.name).ok().flatten(),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<20} {:>12} {:<10} {:<24} attached", "NAME", "SIZE", "POOL", "MAPPED TO");
                for (v, r) in vols.iter().zip(&rows) {
                    let att = r["attachment"].as_object().map_or("-".to_string(), |o| {
                        format!("{} on {} as {}", o["vm"], o["node"], o["target_dev"]).replace('"', "")
                    });
                    let acl = if v.acl.is_empty() { "-".to_string() } else { v.acl.join(",") };
                    println!("{:<20} {:>12} {:<10} {:<24} {att}", v.name, v.size_bytes, v.pool, acl);
                }
            }
        }
        VolumeCommand::Attach { name, vm, dev } => {
            let host = lab_host(&a.lab)?;
            let att = volume::attach_volume(&store(&a.db)?, &arr, &host, &name, &vm, &dev)?;
            println!("attached {name} to {vm} on {} as /dev/{dev} ({}:{} {})", att.node, att.portal, att.lun, att.iqn);
        }
        VolumeCommand::Detach { name } => {
            let host = lab_host(&a.lab)?;
            volume::detach_volume(&store(&a.db)?, &arr, &host, &name)?;
            println!("detached {name}");
        }
        VolumeCommand::Delete { name, force } => {
            let st = store(&a.db)?;
            if let Some(att) = st.attachment(&name)? {
                anyhow::ensure!(force, "{name} is attached to {} on {}: detach it first, or --force", att.vm, att.node);
                st.remove_attachment(&name)?;
            }
            arr.delete(&name, force)?;
            println!("deleted {name}");
        }
        VolumeCommand::Extend { name, size } => {
            let st = store(&a.db)?;
            let bytes = parse_size(&size)?;
            if st.attachment(&name)?.is_some() {
                let host = lab_host(&a.lab)?;
                let (v, told) = volume::extend_volume(&st, &arr, &host, &name, bytes)?;
                println!("{name}: {} bytes; its guest {} sees the new size", v.size_bytes, told.unwrap_or_default());
            } else {
                let v = arr.extend(&name, bytes)?;
                println!("{name}: {} bytes", v.size_bytes);
            }
        }
        VolumeCommand::Migrate { name, to, mode } => {
            let host = lab_host(&a.lab)?;
            let mode = lab::parse_mode(&mode)?;
            let out = volume::migrate_volume(&store(&a.db)?, &arr, &host, &name, &to, Some(mode), Faults::default())?;
            println!("moved {name} with {} to {} (move {})", out.attachment.vm, out.attachment.node, out.id);
        }
        VolumeCommand::Resolve => {
            let host = lab_host(&a.lab)?;
            let r = volume::resolve_open_moves(&store(&a.db)?, &arr, &host)?;
            if r.is_empty() {
                println!("no open volume moves");
            }
            for x in r {
                println!("move {}: {} → {} ({})", x.id, x.volume, x.node, x.note);
            }
        }
        VolumeCommand::History { vm, json } => {
            let h = store(&a.db)?.volume_moves(vm.as_deref(), 200)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                for m in h {
                    println!(
                        "{:>4} {} {} {} → {} {:<10} {} {}",
                        m.id,
                        m.volume,
                        m.vm,
                        m.from_node,
                        m.to_node,
                        m.state,
                        m.step,
                        m.error.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
