//! The volume driver's configuration: a TOML file read again at every call (paper 3.1.1: a
//! change of the array's address or pools applies without a restart).
//!
//! ```toml
//! portal = "10.79.0.1:3260"        # where nodes reach the array's iSCSI portal
//! control_port = 0                 # tgtd's management port (tgtadm -C; 0 = the default daemon)
//! iqn_prefix = "iqn.2026-12.org.amvm"
//! default_pool = "default"
//!
//! [pools.default]
//! dir = "/var/lib/amvm/volumes"    # file-backed LUNs, one NAME.img per volume
//!
//! [pools.fast]
//! vg = "amvm"                      # LV-backed LUNs, one logical volume /dev/amvm/NAME per volume
//!
//! [chap]                           # optional: every target requires this CHAP account
//! user = "amvm"
//! password_file = "/etc/amvm/chap.secret"
//!
//! [ssh]                            # optional: run tgtadm on the array host over SSH
//! host = "array1"
//! user = "root"
//! port = 22
//! identity = "/root/.ssh/id_ed25519"
//! known_hosts = "/etc/amvm/array_known_hosts"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Result, VolumeError};

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/amvm/volumes.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrayConfig {
    /// `HOST:PORT` of the iSCSI portal, as nodes reach it.
    pub portal: String,
    #[serde(default)]
    pub control_port: u16,
    #[serde(default = "default_prefix")]
    pub iqn_prefix: String,
    #[serde(default = "default_pool_name")]
    pub default_pool: String,
    pub pools: BTreeMap<String, Pool>,
    #[serde(default)]
    pub ssh: Option<SshConfig>,
    /// CHAP on every volume's target: initiators must log in with this account.
    #[serde(default)]
    pub chap: Option<ChapConfig>,
}

/// `[chap]`: the account every volume's target requires (one-way CHAP, RFC 3720 §11.1.4).
/// The password is inline or in a file (read at every call, like the rest).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChapConfig {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A file holding the password (its first line), on the controller's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for ChapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapConfig").field("user", &self.user).field("password_file", &self.password_file).finish()
    }
}

/// A CHAP account as initiators use it: user and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap").field("user", &self.user).field("password", &"…").finish()
    }
}

impl Chap {
    /// The name of the libvirt secret (usage type `iscsi`) that holds this account's password
    /// on each node.
    pub fn secret_usage(&self) -> String {
        format!("amvm-iscsi-{}", self.user)
    }
}

impl ChapConfig {
    /// The account, its password read now; checked: the user 1–64 of `A-Z a-z 0-9 . - _ @`, the
    /// password 12–128 printable characters without spaces (RFC 3720 asks for at least 96 bits).
    pub fn resolve(&self) -> Result<Chap> {
        let bad = |m: String| VolumeError::Config(format!("[chap]: {m}"));
        let user_ok = !self.user.is_empty()
            && self.user.len() <= 64
            && self.user.chars().all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c));
        if !user_ok {
            return Err(bad(format!("user {:?}: 1–64 letters, digits, '.', '-', '_' or '@'", self.user)));
        }
        let password = match (&self.password, &self.password_file) {
            (Some(p), None) => p.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| bad(format!("cannot read password_file {}: {e}", f.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            _ => return Err(bad("set exactly one of password and password_file".into())),
        };
        let ok = (12..=128).contains(&password.len()) && password.chars().all(|c| c.is_ascii_graphic());
        if !ok {
            return Err(bad("the password must be 12–128 printable characters without spaces".into()));
        }
        Ok(Chap { user: self.user.clone(), password })
    }
}

/// A pool of volumes: exactly one of `dir` (file-backed LUNs) and `vg` (LV-backed LUNs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Directory of the backing files, one `NAME.img` per volume (on the array host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// LVM volume group: one logical volume `/dev/VG/NAME` per volume (on the array host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vg: Option<String>,
}

/// What backs a pool's LUNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing<'a> {
    Files(&'a Path),
    Lvm(&'a str),
}

impl Pool {
    pub fn files(dir: impl Into<PathBuf>) -> Pool {
        Pool { dir: Some(dir.into()), vg: None }
    }

    pub fn lvm(vg: &str) -> Pool {
        Pool { dir: None, vg: Some(vg.to_string()) }
    }

    /// The pool's backing (a validated pool has exactly one).
    pub fn backing(&self) -> Backing<'_> {
        match (&self.dir, &self.vg) {
            (_, Some(vg)) => Backing::Lvm(vg),
            (Some(d), None) => Backing::Files(d),
            (None, None) => Backing::Files(Path::new("/nonexistent")),
        }
    }

    /// The backing file or logical volume of volume `name`.
    pub fn path_of(&self, name: &str) -> String {
        match self.backing() {
            Backing::Files(d) => d.join(format!("{name}.img")).display().to_string(),
            Backing::Lvm(vg) => format!("/dev/{vg}/{name}"),
        }
    }

    /// Whether `path` is the backing of a volume of this pool.
    pub fn holds(&self, path: &str) -> bool {
        let parent = Path::new(path).parent();
        match self.backing() {
            Backing::Files(d) => parent == Some(d),
            Backing::Lvm(vg) => parent == Some(Path::new("/dev").join(vg).as_path()),
        }
    }

    fn validate(&self, name: &str) -> std::result::Result<(), String> {
        match (&self.dir, &self.vg) {
            (Some(d), None) if d.is_absolute() => Ok(()),
            (Some(_), None) => Err(format!("pools.{name}.dir must be an absolute path")),
            (None, Some(vg)) => {
                let ok = !vg.is_empty()
                    && vg.len() <= 127
                    && !vg.starts_with('-')
                    && vg != "."
                    && vg != ".."
                    && vg.chars().all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c));
                if ok {
                    Ok(())
                } else {
                    Err(format!("pools.{name}.vg {vg:?}: an LVM volume group name (letters, digits, '+_.-')"))
                }
            }
            _ => Err(format!("pools.{name}: set exactly one of dir (file-backed) and vg (LV-backed)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    pub host: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Private key file (`ssh -i`).
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// The array host's key (`UserKnownHostsFile`; default: the user's `~/.ssh/known_hosts`).
    /// Its key is checked strictly: an unknown or changed host key is an error.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Seconds to wait for the connection (`ConnectTimeout`).
    #[serde(default = "default_timeout")]
    pub connect_timeout_s: u32,
}

fn default_prefix() -> String {
    "iqn.2026-12.org.amvm".into()
}
fn default_pool_name() -> String {
    "default".into()
}
fn default_timeout() -> u32 {
    5
}

impl ArrayConfig {
    /// A configuration for this machine's own tgtd: portal on `portal`, one pool at `dir`.
    pub fn local(portal: &str, control_port: u16, dir: &Path) -> ArrayConfig {
        ArrayConfig {
            portal: portal.to_string(),
            control_port,
            iqn_prefix: default_prefix(),
            default_pool: default_pool_name(),
            pools: BTreeMap::from([(default_pool_name(), Pool::files(dir))]),
            ssh: None,
            chap: None,
        }
    }

    pub fn load(path: &Path) -> Result<ArrayConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            VolumeError::Config(format!("cannot read {}: {e} (see docs/volumes.md for its format)", path.display()))
        })?;
        let cfg: ArrayConfig =
            toml::from_str(&text).map_err(|e| VolumeError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate().map_err(|e| VolumeError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.portal_addr()?;
        if !self.iqn_prefix.starts_with("iqn.") || self.iqn_prefix.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(format!("iqn_prefix {:?} must look like iqn.YYYY-MM.domain (no ':')", self.iqn_prefix));
        }
        if !self.pools.contains_key(&self.default_pool) {
            return Err(format!("default_pool {:?} is not one of [pools.*]", self.default_pool));
        }
        for (name, p) in &self.pools {
            p.validate(name)?;
        }
        if let Some(c) = &self.chap {
            c.resolve().map_err(|e| e.to_string().trim_start_matches("volume driver configuration: ").to_string())?;
        }
        if let Some(s) = &self.ssh {
            let safe = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
            if !safe(&s.host) || s.user.as_deref().is_some_and(|u| !safe(u)) {
                return Err("ssh.host and ssh.user: letters, digits, '.', '-', '_' only".into());
            }
        }
        Ok(())
    }

    /// The portal's host and port.
    pub fn portal_addr(&self) -> std::result::Result<(String, u16), String> {
        let bad = || format!("portal {:?} must be HOST:PORT", self.portal);
        let (h, p) = self.portal.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = p.parse().map_err(|_| bad())?;
        let h = h.trim_start_matches('[').trim_end_matches(']');
        if h.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok((h.to_string(), port))
    }

    pub fn pool(&self, name: Option<&str>) -> Result<(&str, &Pool)> {
        let name = name.unwrap_or(&self.default_pool);
        self.pools.get_key_value(name).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
            let known: Vec<&str> = self.pools.keys().map(String::as_str).collect();
            VolumeError::Invalid(format!("no pool {name:?} (pools: {})", known.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let text = r#"
            portal = "10.79.0.1:3260"
            control_port = 7
            [pools.default]
            dir = "/var/lib/amvm/volumes"
            [ssh]
            host = "array1"
            user = "root"
        "#;
        let c: ArrayConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.portal_addr().unwrap(), ("10.79.0.1".to_string(), 3260));
        assert_eq!(c.ssh.as_ref().unwrap().connect_timeout_s, 5);
        assert!(c.pool(Some("fast")).unwrap_err().to_string().contains("no pool \"fast\""));

        let mut bad = c.clone();
        bad.portal = "nowhere".into();
        assert!(bad.validate().unwrap_err().contains("HOST:PORT"));
        let mut bad = c.clone();
        bad.default_pool = "x".into();
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.ssh.as_mut().unwrap().host = "a;reboot".into();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<ArrayConfig>("portal='a:1'\nbogus=1\n[pools]\n").is_err());
    }

    #[test]
    fn pools_are_files_or_logical_volumes() {
        let c: ArrayConfig =
            toml::from_str("portal = 'a:1'\n[pools.default]\ndir = '/srv/v'\n[pools.fast]\nvg = 'amvm'\n").unwrap();
        c.validate().unwrap();
        let (f, l) = (&c.pools["default"], &c.pools["fast"]);
        assert_eq!((f.path_of("d1"), l.path_of("d1")), ("/srv/v/d1.img".to_string(), "/dev/amvm/d1".to_string()));
        assert!(f.holds("/srv/v/d1.img") && !f.holds("/dev/amvm/d1"));
        assert!(l.holds("/dev/amvm/d1") && !l.holds("/dev/other/d1") && !l.holds("/srv/v/d1.img"));
        for bad in ["dir = '/a'\nvg = 'b'", "", "vg = '-x'", "vg = 'a b'", "dir = 'rel'"] {
            let t = format!("portal = 'a:1'\n[pools.default]\n{bad}\n");
            let c: ArrayConfig = toml::from_str(&t).unwrap();
            assert!(c.validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn chap_is_checked_and_its_password_never_printed() {
        let mut c = ArrayConfig::local("127.0.0.1:3260", 0, Path::new("/srv/v"));
        c.chap = Some(ChapConfig { user: "amvm".into(), password: Some("s3cret-s3cret".into()), password_file: None });
        c.validate().unwrap();
        let chap = c.chap.as_ref().unwrap().resolve().unwrap();
        assert_eq!(chap.secret_usage(), "amvm-iscsi-amvm");
        assert!(!format!("{c:?} {chap:?}").contains("s3cret"), "Debug shows the password");
        for (user, pw) in [("amvm", "short"), ("a b", "long-enough-pw"), ("amvm", "has space in it")] {
            c.chap = Some(ChapConfig { user: user.into(), password: Some(pw.into()), password_file: None });
            assert!(c.validate().is_err(), "{user:?} / {pw:?} accepted");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("chap.secret");
        std::fs::write(&f, "from-a-file-123\n").unwrap();
        c.chap = Some(ChapConfig { user: "amvm".into(), password: None, password_file: Some(f.clone()) });
        assert_eq!(c.chap.as_ref().unwrap().resolve().unwrap().password, "from-a-file-123");
        c.chap = Some(ChapConfig { user: "amvm".into(), password: Some("x".repeat(12)), password_file: Some(f) });
        assert!(c.validate().unwrap_err().contains("exactly one"));
        c.chap = Some(ChapConfig { user: "amvm".into(), password: None, password_file: Some("/nonexistent".into()) });
        assert!(c.validate().unwrap_err().contains("cannot read"));
    }
}
