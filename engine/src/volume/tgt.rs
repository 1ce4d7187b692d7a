//! [`DiskArray`] on Linux's userspace iSCSI target `tgtd` (Debian `tgt`), driven by `tgtadm`.
//!
//! Each call reads the configuration file again. Commands (`tgtadm`, and `truncate`, `stat`,
//! `mkdir`, `rm`, `ls` for the backing files) run on this machine, or on the array host over SSH
//! when the configuration has an `[ssh]` section (`ssh -o BatchMode=yes HOST -- 'tgtadm' …`,
//! every argument single-quoted). A failing command's error carries its own stderr.
//!
//! tgtd keeps targets in memory: after it restarts, [`TgtArray::list`] exports again every
//! backing file of the pools (without ACL entries: nothing is mapped until the controller maps
//! it again).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::config::{ArrayConfig, Backing, Chap};
use super::{check_name, Connection, DiskArray, Initiator, Result, Session, Volume, VolumeError};

/// The disk LUN of each volume's target (LUN 0 is tgtd's controller).
pub const LUN: u32 = 1;

/// The tgtd driver; holds only where its configuration is.
#[derive(Debug, Clone)]
pub struct TgtArray {
    config: PathBuf,
}

/// One target as `tgtadm --op show --mode target` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetInfo {
    pub tid: u32,
    pub iqn: String,
    pub sessions: Vec<Session>,
    /// Backing file of LUN 1, if any.
    pub backing: Option<String>,
    pub acl: Vec<String>,
    /// CHAP accounts bound to the target (logins must use one).
    pub accounts: Vec<String>,
}

/// Parses `tgtadm --lld iscsi --op show --mode target`.
pub fn parse_show(text: &str) -> Result<Vec<TargetInfo>> {
    #[derive(PartialEq)]
    enum Sec {
        Other,
        Nexus,
        Lun,
        Acl,
        Account,
    }
    let mut out: Vec<TargetInfo> = Vec::new();
    let mut sec = Sec::Other;
    let mut lun: Option<u32> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = raw.strip_prefix("Target ") {
            let (tid, iqn) = rest.split_once(": ").ok_or_else(|| VolumeError::Parse(raw.to_string()))?;
            let tid = tid.trim().parse().map_err(|_| VolumeError::Parse(raw.to_string()))?;
            out.push(TargetInfo { tid, iqn: iqn.trim().to_string(), ..Default::default() });
            sec = Sec::Other;
            continue;
        }
        let Some(t) = out.last_mut() else { return Err(VolumeError::Parse(raw.to_string())) };
        match line {
            "I_T nexus information:" => {
                sec = Sec::Nexus;
                continue;
            }
            "LUN information:" => {
                sec = Sec::Lun;
                continue;
            }
            "ACL information:" => {
                sec = Sec::Acl;
                continue;
            }
            "Account information:" => {
                sec = Sec::Account;
                continue;
            }
            "System information:" => {
                sec = Sec::Other;
                continue;
            }
            _ => {}
        }
        match sec {
            Sec::Nexus => {
                if let Some(sid) = line.strip_prefix("I_T nexus: ") {
                    let sid = sid.trim().parse().map_err(|_| VolumeError::Parse(raw.to_string()))?;
                    t.sessions.push(Session { sid, initiator: String::new(), connections: Vec::new() });
                } else if let (Some(s), Some(init)) = (t.sessions.last_mut(), line.strip_prefix("Initiator: ")) {
                    s.initiator = init.split(" alias:").next().unwrap_or(init).trim().to_string();
                } else if let (Some(s), Some(cid)) = (t.sessions.last_mut(), line.strip_prefix("Connection: ")) {
                    let cid = cid.trim().parse().map_err(|_| VolumeError::Parse(raw.to_string()))?;
                    s.connections.push((cid, String::new()));
                } else if let (Some(s), Some(ip)) = (t.sessions.last_mut(), line.strip_prefix("IP Address: ")) {
                    if let Some(c) = s.connections.last_mut() {
                        c.1 = ip.trim().to_string();
                    }
                }
            }
            Sec::Lun => {
                if let Some(n) = line.strip_prefix("LUN: ") {
                    lun = n.trim().parse().ok();
                } else if let Some(p) = line.strip_prefix("Backing store path: ") {
                    if lun == Some(LUN) && p != "None" {
                        t.backing = Some(p.trim().to_string());
                    }
                }
            }
            Sec::Acl => t.acl.push(line.to_string()),
            Sec::Account => t.accounts.push(line.split_whitespace().next().unwrap_or(line).to_string()),
            Sec::Other => {}
        }
    }
    Ok(out)
}

/// Quotes one argument for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command line that runs `argv` as the configuration says: as is, or over SSH.
pub fn command_line(cfg: &ArrayConfig, argv: &[String]) -> Vec<String> {
    let Some(ssh) = &cfg.ssh else { return argv.to_vec() };
    let mut c: Vec<String> = vec![
        "ssh".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        format!("ConnectTimeout={}", ssh.connect_timeout_s),
    ];
    if let Some(p) = ssh.port {
        c.extend(["-p".into(), p.to_string()]);
    }
    if let Some(i) = &ssh.identity {
        c.extend(["-i".into(), i.display().to_string()]);
    }
    if let Some(k) = &ssh.known_hosts {
        c.extend(["-o".into(), format!("UserKnownHostsFile={}", k.display())]);
    }
    c.push(match &ssh.user {
        Some(u) => format!("{u}@{}", ssh.host),
        None => ssh.host.clone(),
    });
    c.push("--".into());
    c.push(argv.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "));
    c
}

/// How a command ended.
struct Output {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

fn execute(cfg: &ArrayConfig, argv: &[String]) -> Result<Output> {
    let line = command_line(cfg, argv);
    let shown = line.join(" ");
    // LVM warns on stderr about every inherited descriptor; its errors are what we want there.
    let out = Command::new(&line[0])
        .args(&line[1..])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            let pkg = match line[0].as_str() {
                "ssh" => "openssh-client",
                c if c.starts_with("lv") => "lvm2",
                "tgtadm" => "tgt",
                _ => "coreutils/util-linux",
            };
            VolumeError::Unreachable {
                cmd: shown.clone(),
                detail: format!("cannot run {}: {e} (Debian {pkg})", line[0]),
            }
        })?;
    let o = Output {
        ok: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    };
    // ssh itself fails with 255; tgtadm cannot reach tgtd's management socket with 107.
    let code = out.status.code();
    let ssh_down = cfg.ssh.is_some() && code == Some(255);
    let tgtd_down = o.stderr.contains("failed to send request hdr") || o.stderr.contains("can't connect to");
    if ssh_down || tgtd_down || code == Some(107) {
        return Err(VolumeError::Unreachable { cmd: shown, detail: o.stderr });
    }
    Ok(o)
}

/// Runs a command that must succeed.
fn run(cfg: &ArrayConfig, argv: &[String]) -> Result<String> {
    let o = execute(cfg, argv)?;
    if o.ok {
        Ok(o.stdout)
    } else {
        Err(VolumeError::Command { cmd: command_line(cfg, argv).join(" "), status: o.status, stderr: o.stderr })
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The tag of the logical volumes that are volumes (`lvcreate --addtag`).
pub const LV_TAG: &str = "amvm-volume";

/// The names of the tagged logical volumes in `lvs --noheadings -o lv_name,lv_tags` output.
fn lv_names(lvs: &str) -> Vec<String> {
    lvs.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            f.next().is_some_and(|tags| tags.split(',').any(|t| t == LV_TAG)).then(|| name.to_string())
        })
        .collect()
}

/// An LVM operation on a logical volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LvOp {
    Create,
    Extend,
    Remove,
}

/// The LVM command for `op` on the logical volume at `path` (`/dev/VG/NAME`): sizes in bytes
/// (LVM rounds up to its extents), no prompts, no signature wiping on create.
fn lv_argv(op: LvOp, path: &str, bytes: u64) -> Vec<String> {
    let mut parts = path.trim_start_matches("/dev/").splitn(2, '/');
    let (vg, name) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let size = format!("{bytes}b");
    match op {
        LvOp::Create => argv(&["lvcreate", "-y", "-W", "n", "--addtag", LV_TAG, "-L", &size, "-n", name, vg]),
        LvOp::Extend => argv(&["lvextend", "-L", &size, &format!("{vg}/{name}")]),
        LvOp::Remove => argv(&["lvremove", "-y", &format!("{vg}/{name}")]),
    }
}

impl TgtArray {
    /// A driver reading its configuration from `config` at every call.
    pub fn new(config: impl Into<PathBuf>) -> TgtArray {
        TgtArray { config: config.into() }
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The configuration as it is now.
    pub fn config(&self) -> Result<ArrayConfig> {
        ArrayConfig::load(&self.config)
    }

    fn tgtadm(cfg: &ArrayConfig, args: &[&str]) -> Vec<String> {
        let mut v = argv(&["tgtadm", "-C", &cfg.control_port.to_string(), "--lld", "iscsi"]);
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn targets(cfg: &ArrayConfig) -> Result<Vec<TargetInfo>> {
        parse_show(&run(cfg, &Self::tgtadm(cfg, &["--op", "show", "--mode", "target"]))?)
    }

    fn iqn(cfg: &ArrayConfig, name: &str) -> String {
        format!("{}:{name}", cfg.iqn_prefix)
    }

    /// The size of a backing file (`stat`) or logical volume (`blockdev`); `None` when missing.
    fn file_size(cfg: &ArrayConfig, path: &str) -> Result<Option<u64>> {
        let cmd = if path.starts_with("/dev/") {
            argv(&["blockdev", "--getsize64", path])
        } else {
            argv(&["stat", "-c", "%s", path])
        };
        let o = execute(cfg, &cmd)?;
        if !o.ok {
            return Ok(None);
        }
        o.stdout.trim().parse().map(Some).map_err(|_| VolumeError::Parse(format!("{}: {}", cmd[0], o.stdout.trim())))
    }

    /// Removes a volume's backing file or logical volume.
    fn remove_backing(cfg: &ArrayConfig, path: &str) -> Result<()> {
        if path.starts_with("/dev/") {
            run(cfg, &lv_argv(LvOp::Remove, path, 0)).map(drop)
        } else {
            run(cfg, &argv(&["rm", "-f", path])).map(drop)
        }
    }

    /// Creates the target of a volume with its LUN; returns the target id.
    fn export(cfg: &ArrayConfig, iqn: &str, path: &str) -> Result<u32> {
        // Target ids are tgtd-wide; another caller may take the same one between show and new.
        let mut last = None;
        for _ in 0..8 {
            let tid = Self::targets(cfg)?.iter().map(|t| t.tid).max().unwrap_or(0) + 1;
            let t = tid.to_string();
            match run(cfg, &Self::tgtadm(cfg, &["--op", "new", "--mode", "target", "--tid", &t, "-T", iqn])) {
                Ok(_) => {
                    let lun = LUN.to_string();
                    let add = ["--op", "new", "--mode", "logicalunit", "--tid", &t, "--lun", &lun, "-b", path];
                    if let Err(e) = run(cfg, &Self::tgtadm(cfg, &add)) {
                        let _ = run(cfg, &Self::tgtadm(cfg, &["--op", "delete", "--mode", "target", "--tid", &t]));
                        return Err(e);
                    }
                    return Ok(tid);
                }
                Err(e @ VolumeError::Command { .. }) if e.to_string().contains("already exists") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| VolumeError::Invalid("no free target id".into())))
    }

    fn volume(cfg: &ArrayConfig, t: &TargetInfo) -> Result<Option<Volume>> {
        let Some(name) = t.iqn.strip_prefix(&format!("{}:", cfg.iqn_prefix)) else { return Ok(None) };
        let Some(path) = &t.backing else { return Ok(None) };
        let pool = cfg.pools.iter().find(|(_, p)| p.holds(path)).map(|(n, _)| n.clone()).unwrap_or_default();
        Ok(Some(Volume {
            name: name.to_string(),
            iqn: t.iqn.clone(),
            tid: Some(t.tid),
            size_bytes: Self::file_size(cfg, path)?.unwrap_or(0),
            pool,
            path: path.clone(),
            acl: t.acl.clone(),
            sessions: t.sessions.clone(),
        }))
    }

    fn find(cfg: &ArrayConfig, name: &str) -> Result<(TargetInfo, Volume)> {
        check_name(name)?;
        let iqn = Self::iqn(cfg, name);
        for t in Self::targets(cfg)? {
            if t.iqn == iqn {
                if let Some(v) = Self::volume(cfg, &t)? {
                    return Ok((t, v));
                }
            }
        }
        Err(VolumeError::NotFound(name.to_string()))
    }

    /// Applies `[chap]`: the account exists in tgtd with the configured password, and is bound
    /// to every volume's target. tgtd cannot change an account's password, and drops its
    /// bindings when it is deleted: a changed password (its SHA-256 kept in the default pool's
    /// `.amvm-chap-USER` file) re-creates the account and binds it again to each target. Without
    /// `[chap]`, nothing is done here ([`Self::secure`] unbinds per target).
    fn apply_chap(cfg: &ArrayConfig, targets: &[TargetInfo]) -> Result<Option<Chap>> {
        let Some(c) = &cfg.chap else { return Ok(None) };
        let chap = c.resolve()?;
        let shown = run(cfg, &Self::tgtadm(cfg, &["--op", "show", "--mode", "account"]))?;
        let exists = shown.lines().skip(1).any(|l| l.trim() == chap.user);
        let digest: String = Sha256::new()
            .chain_update(cfg.iqn_prefix.as_bytes())
            .chain_update([0])
            .chain_update(chap.user.as_bytes())
            .chain_update([0])
            .chain_update(chap.password.as_bytes())
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Kept beside the default pool's files, or in /var/lib/amvm; one per tgtd (port).
        let dir = match cfg.pool(None)?.1.backing() {
            Backing::Files(d) => d.display().to_string(),
            Backing::Lvm(_) => "/var/lib/amvm".to_string(),
        };
        let marker = format!("{dir}/.amvm-chap-{}-{}", chap.user, cfg.control_port);
        let stored = execute(cfg, &argv(&["cat", &marker]))?;
        if exists && stored.ok && stored.stdout.trim() == digest {
            return Ok(Some(chap));
        }
        if exists {
            run(cfg, &Self::tgtadm(cfg, &["--op", "delete", "--mode", "account", "--user", &chap.user]))?;
        }
        let new = ["--op", "new", "--mode", "account", "--user", &chap.user, "--password", &chap.password];
        run(cfg, &Self::tgtadm(cfg, &new))?;
        for t in targets.iter().filter(|t| t.iqn.starts_with(&format!("{}:", cfg.iqn_prefix))) {
            Self::bind_account(cfg, t.tid, &chap.user)?;
        }
        run(cfg, &argv(&["mkdir", "-p", &dir]))?;
        run(cfg, &argv(&["sh", "-c", "umask 077 && printf '%s\\n' \"$0\" > \"$1\"", &digest, &marker]))?;
        Ok(Some(chap))
    }

    fn bind_account(cfg: &ArrayConfig, tid: u32, user: &str) -> Result<()> {
        let tid = tid.to_string();
        match run(cfg, &Self::tgtadm(cfg, &["--op", "bind", "--mode", "account", "--tid", &tid, "--user", user])) {
            Err(e @ VolumeError::Command { .. }) if e.to_string().contains("already exists") => Ok(()),
            r => r.map(drop),
        }
    }

    /// Makes target `t`'s accounts what the configuration says: the `[chap]` account bound
    /// (applied first), or none without `[chap]`. Returns the account.
    fn secure(cfg: &ArrayConfig, t: &TargetInfo, all: &[TargetInfo]) -> Result<Option<Chap>> {
        let chap = Self::apply_chap(cfg, all)?;
        let tid = t.tid.to_string();
        for other in t.accounts.iter().filter(|a| chap.as_ref().is_none_or(|c| c.user != **a)) {
            let unbind = ["--op", "unbind", "--mode", "account", "--tid", &tid, "--user", other];
            match run(cfg, &Self::tgtadm(cfg, &unbind)) {
                Err(e @ VolumeError::Command { .. }) if e.to_string().contains("can't find") => {}
                r => r.map(drop)?,
            }
        }
        if let Some(c) = &chap {
            Self::bind_account(cfg, t.tid, &c.user)?;
        }
        Ok(chap)
    }

    fn bind_args(op: &'static str, tid: u32, node: &Initiator) -> Vec<String> {
        let flag = match node {
            Initiator::Address(_) => "-I",
            Initiator::Iqn(_) => "-Q",
        };
        argv(&["--op", op, "--mode", "target", "--tid", &tid.to_string(), flag, &node.to_string()])
    }
}

impl DiskArray for TgtArray {
    fn ping(&self) -> Result<()> {
        let cfg = self.config()?;
        Self::targets(&cfg).map(drop)
    }

    fn create(&self, name: &str, size_bytes: u64, pool: Option<&str>) -> Result<Volume> {
        check_name(name)?;
        let cfg = self.config()?;
        if size_bytes == 0 || !size_bytes.is_multiple_of(512) {
            return Err(VolumeError::Invalid(format!("size {size_bytes}: a positive multiple of 512 bytes")));
        }
        let (pool_name, p) = cfg.pool(pool)?;
        let iqn = Self::iqn(&cfg, name);
        if Self::targets(&cfg)?.iter().any(|t| t.iqn == iqn) {
            return Err(VolumeError::Exists(name.to_string()));
        }
        let path = p.path_of(name);
        if Self::file_size(&cfg, &path)?.is_some() {
            return Err(VolumeError::Exists(format!("{name} (its backing {path} exists)")));
        }
        match p.backing() {
            Backing::Files(dir) => {
                run(&cfg, &argv(&["mkdir", "-p", &dir.display().to_string()]))?;
                run(&cfg, &argv(&["truncate", "-s", &size_bytes.to_string(), &path]))?;
            }
            Backing::Lvm(_) => {
                run(&cfg, &lv_argv(LvOp::Create, &path, size_bytes))?;
            }
        }
        // LVM rounds up to whole extents.
        let size_bytes = Self::file_size(&cfg, &path)?.unwrap_or(size_bytes);
        let tid = match Self::export(&cfg, &iqn, &path) {
            Ok(t) => t,
            Err(e) => {
                let _ = Self::remove_backing(&cfg, &path);
                return Err(e);
            }
        };
        if cfg.chap.is_some() {
            let all = Self::targets(&cfg)?;
            if let Some(t) = all.iter().find(|t| t.tid == tid) {
                Self::secure(&cfg, t, &all)?;
            }
        }
        Ok(Volume {
            name: name.to_string(),
            iqn,
            tid: Some(tid),
            size_bytes,
            pool: pool_name.to_string(),
            path,
            acl: Vec::new(),
            sessions: Vec::new(),
        })
    }

    fn delete(&self, name: &str, force: bool) -> Result<()> {
        let cfg = self.config()?;
        let (t, v) = Self::find(&cfg, name)?;
        if !force && (!v.acl.is_empty() || !v.sessions.is_empty()) {
            return Err(VolumeError::Invalid(format!(
                "volume {name:?} is mapped to {} ({} open sessions): unmap it first, or force",
                v.acl.join(", "),
                v.sessions.len()
            )));
        }
        let tid = t.tid.to_string();
        run(&cfg, &Self::tgtadm(&cfg, &["--op", "delete", "--mode", "target", "--tid", &tid, "--force"]))?;
        Self::remove_backing(&cfg, &v.path)?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<Volume>> {
        let cfg = self.config()?;
        let targets = Self::targets(&cfg)?;
        // Backing files not exported (tgtd restarted): export them again.
        let exported: Vec<&str> = targets.iter().filter_map(|t| t.backing.as_deref()).collect();
        let mut again = false;
        for p in cfg.pools.values() {
            let names: Vec<String> = match p.backing() {
                Backing::Files(dir) => {
                    let o = execute(&cfg, &argv(&["ls", "-1", &dir.display().to_string()]))?;
                    if !o.ok {
                        continue;
                    }
                    o.stdout.lines().filter_map(|f| f.strip_suffix(".img")).map(str::to_string).collect()
                }
                Backing::Lvm(vg) => {
                    // Only the group's volumes that carry our tag: a shared group's other LVs stay.
                    let o = execute(&cfg, &argv(&["lvs", "--noheadings", "-o", "lv_name,lv_tags", vg]))?;
                    if !o.ok {
                        continue;
                    }
                    lv_names(&o.stdout)
                }
            };
            for name in &names {
                let path = p.path_of(name);
                if check_name(name).is_ok() && !exported.contains(&path.as_str()) {
                    Self::export(&cfg, &Self::iqn(&cfg, name), &path)?;
                    again = true;
                }
            }
        }
        let targets = if again { Self::targets(&cfg)? } else { targets };
        if again {
            // Exported again with no account: CHAP as configured.
            if let Some(c) = Self::apply_chap(&cfg, &targets)? {
                for t in targets.iter().filter(|t| !t.accounts.contains(&c.user)) {
                    if t.iqn.starts_with(&format!("{}:", cfg.iqn_prefix)) {
                        Self::bind_account(&cfg, t.tid, &c.user)?;
                    }
                }
            }
        }
        let mut out = Vec::new();
        for t in &targets {
            if let Some(v) = Self::volume(&cfg, t)? {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn extend(&self, name: &str, size_bytes: u64) -> Result<Volume> {
        let cfg = self.config()?;
        let (t, v) = Self::find(&cfg, name)?;
        if size_bytes < v.size_bytes || !size_bytes.is_multiple_of(512) {
            return Err(VolumeError::Invalid(format!(
                "volume {name:?} is {} bytes: the new size must be at least that, in 512-byte units (got {size_bytes})",
                v.size_bytes
            )));
        }
        if v.path.starts_with("/dev/") {
            if size_bytes > v.size_bytes {
                run(&cfg, &lv_argv(LvOp::Extend, &v.path, size_bytes))?;
            }
        } else {
            run(&cfg, &argv(&["truncate", "-s", &size_bytes.to_string(), &v.path]))?;
        }
        let size_bytes = Self::file_size(&cfg, &v.path)?.unwrap_or(size_bytes);
        // tgtd reads a LUN's size when the LUN is added: add it again.
        let (tid, lun) = (t.tid.to_string(), LUN.to_string());
        let delete = Self::tgtadm(&cfg, &["--op", "delete", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun]);
        // tgtd refuses while commands are in flight on the LUN ("this logical unit is still
        // active", a guest writing to it): those finish within milliseconds, so try again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match run(&cfg, &delete) {
                Ok(_) => break,
                Err(e @ VolumeError::Command { .. })
                    if e.to_string().contains("still active") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        let add = ["--op", "new", "--mode", "logicalunit", "--tid", &tid, "--lun", &lun, "-b", &v.path];
        run(&cfg, &Self::tgtadm(&cfg, &add))?;
        Ok(Volume { size_bytes, ..v })
    }

    fn map(&self, name: &str, node: &Initiator) -> Result<Connection> {
        let cfg = self.config()?;
        let (t, _) = Self::find(&cfg, name)?;
        // CHAP as configured now, before the node may log in.
        let chap = Self::secure(&cfg, &t, &Self::targets(&cfg)?)?;
        let args = Self::bind_args("bind", t.tid, node);
        match run(&cfg, &Self::tgtadm(&cfg, &args.iter().map(String::as_str).collect::<Vec<_>>())) {
            Ok(_) => {}
            Err(e @ VolumeError::Command { .. }) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(e),
        }
        let (host, port) = cfg.portal_addr().map_err(VolumeError::Config)?;
        Ok(Connection { host, port, iqn: t.iqn, lun: LUN, chap })
    }

    fn unmap(&self, name: &str, node: &Initiator) -> Result<()> {
        let cfg = self.config()?;
        let (t, _) = Self::find(&cfg, name)?;
        let args = Self::bind_args("unbind", t.tid, node);
        match run(&cfg, &Self::tgtadm(&cfg, &args.iter().map(String::as_str).collect::<Vec<_>>())) {
            Ok(_) => {}
            Err(e @ VolumeError::Command { .. }) if e.to_string().contains("does not exist") => {}
            Err(e) => return Err(e),
        }
        // The ACL is checked at login only: close what the node still has open.
        let tid = t.tid.to_string();
        for s in &t.sessions {
            for (cid, ip) in &s.connections {
                let theirs = match node {
                    Initiator::Address(a) => ip.parse::<std::net::IpAddr>().is_ok_and(|p| p == *a),
                    Initiator::Iqn(n) => s.initiator == *n,
                };
                if theirs {
                    let (sid, cid) = (s.sid.to_string(), cid.to_string());
                    let close = ["--op", "delete", "--mode", "conn", "--tid", &tid, "--sid", &sid, "--cid", &cid];
                    match run(&cfg, &Self::tgtadm(&cfg, &close)) {
                        Ok(_) => {}
                        // Gone by itself meanwhile.
                        Err(e @ VolumeError::Command { .. }) if e.to_string().contains("can't find") => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    fn connection(&self, name: &str) -> Result<Connection> {
        let cfg = self.config()?;
        let (t, _) = Self::find(&cfg, name)?;
        let (host, port) = cfg.portal_addr().map_err(VolumeError::Config)?;
        let chap = cfg.chap.as_ref().map(|c| c.resolve()).transpose()?;
        Ok(Connection { host, port, iqn: t.iqn, lun: LUN, chap })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::config::SshConfig;

    const SHOW: &str = "Target 1: iqn.2026-12.org.amvm:v1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: iqn.2008-11.org.linux-kvm:abc alias: none
            Connection: 0
                IP Address: 10.79.0.11
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
        LUN: 1
            Type: disk
            Size: 67 MB, Block size: 512
            Backing store path: /var/lib/amvm/volumes/v1.img
            Backing store flags: 
    Account information:
        amvm
    ACL information:
        10.79.0.11
        iqn.1994-05.com.example:n1
Target 2: iqn.2026-12.org.amvm:v2
    System information:
        Driver: iscsi
    I_T nexus information:
    LUN information:
        LUN: 0
            Backing store path: None
    Account information:
    ACL information:
";

    #[test]
    fn parses_tgtadm_show() {
        let t = parse_show(SHOW).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].tid, 1);
        assert_eq!(t[0].iqn, "iqn.2026-12.org.amvm:v1");
        assert_eq!(t[0].backing.as_deref(), Some("/var/lib/amvm/volumes/v1.img"));
        assert_eq!(t[0].acl, vec!["10.79.0.11", "iqn.1994-05.com.example:n1"]);
        assert_eq!(t[0].accounts, vec!["amvm"]);
        assert!(t[1].accounts.is_empty());
        assert_eq!(
            t[0].sessions,
            vec![Session {
                sid: 3,
                initiator: "iqn.2008-11.org.linux-kvm:abc".into(),
                connections: vec![(0, "10.79.0.11".into())]
            }]
        );
        assert_eq!(t[1].backing, None);
        assert!(t[1].acl.is_empty() && t[1].sessions.is_empty());
        assert!(parse_show("garbage\n").is_err());
        assert!(parse_show("").unwrap().is_empty());
    }

    #[test]
    fn lvm_commands() {
        assert_eq!(
            lv_argv(LvOp::Create, "/dev/amvm/d1", 64 << 20),
            argv(&["lvcreate", "-y", "-W", "n", "--addtag", "amvm-volume", "-L", "67108864b", "-n", "d1", "amvm"])
        );
        assert_eq!(lv_names("  d1 amvm-volume\n  root\n  d2 x,amvm-volume\n  d3 other\n"), ["d1", "d2"]);
        assert_eq!(lv_argv(LvOp::Extend, "/dev/amvm/d1", 1 << 30), argv(&["lvextend", "-L", "1073741824b", "amvm/d1"]));
        assert_eq!(lv_argv(LvOp::Remove, "/dev/amvm/d1", 0), argv(&["lvremove", "-y", "amvm/d1"]));
    }

    #[test]
    fn ssh_command_line_quotes_every_argument() {
        let mut cfg = ArrayConfig::local("10.0.0.1:3260", 0, Path::new("/srv/vol"));
        let a = argv(&["tgtadm", "-C", "0", "--op", "new", "-T", "iqn.x:it's"]);
        assert_eq!(command_line(&cfg, &a), a, "local: as is");
        cfg.ssh = Some(SshConfig {
            host: "array1".into(),
            user: Some("root".into()),
            port: Some(2222),
            identity: Some("/root/.ssh/id".into()),
            known_hosts: None,
            connect_timeout_s: 3,
        });
        assert_eq!(
            command_line(&cfg, &a),
            argv(&[
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=3",
                "-p",
                "2222",
                "-i",
                "/root/.ssh/id",
                "root@array1",
                "--",
                r"'tgtadm' '-C' '0' '--op' 'new' '-T' 'iqn.x:it'\''s'",
            ])
        );
    }
}
