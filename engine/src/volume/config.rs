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
//! [chap]                           # optional: every target requires this CHAP account
//! user = "amvm"
//! password_file = "/etc/amvm/chap.secret"
//!
//! [ssh]                            # optional: run tgtadm on the array host over SSH
//! host = "array1"
//! user = "root"
//! port = 22
//! identity = "/root/.ssh/id_ed25519"
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Directory of the backing files (on the array host).
    pub dir: PathBuf,
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
            pools: BTreeMap::from([(default_pool_name(), Pool { dir: dir.to_path_buf() })]),
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
            if !p.dir.is_absolute() {
                return Err(format!("pools.{name}.dir must be an absolute path"));
            }
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
