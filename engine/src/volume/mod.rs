//! Volumes on a disk array (issue #11, paper 3.1): the [`DiskArray`] interface, its
//! implementation on Linux's userspace iSCSI target `tgtd` driven by `tgtadm` ([`tgt`]), the
//! driver's configuration ([`config`], re-read at every call) and the libvirt disk a guest
//! attaches a volume with ([`disk_xml`]: QEMU's own iSCSI initiator, no kernel initiator).
//!
//! A volume is one iSCSI target (`PREFIX:NAME`) with one disk LUN (1) backed by a file in a pool
//! directory. *Mapping* a volume to a node adds the node to the target's ACL (by initiator
//! address or IQN); *unmapping* removes it and closes the node's open sessions. What a node
//! needs to connect is a [`Connection`] (portal, target IQN, LUN).

pub mod config;
pub mod daemon;
pub mod tgt;

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use config::{ArrayConfig, Chap, ChapConfig, Pool, SshConfig};
pub use tgt::TgtArray;

/// What a volume operation failed with; every variant says what was run and why it failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The driver's configuration file is missing or invalid.
    #[error("volume driver configuration: {0}")]
    Config(String),
    /// The array (tgtd, or the SSH host it runs on) did not answer.
    #[error("the disk array is unreachable: `{cmd}`: {detail}")]
    Unreachable { cmd: String, detail: String },
    /// A command ran and failed; `stderr` is its own message.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    #[error("no volume {0:?}")]
    NotFound(String),
    #[error("volume {0:?} already exists")]
    Exists(String),
    /// Bad input (a name, size or initiator).
    #[error("{0}")]
    Invalid(String),
    /// Output of `tgtadm` that does not parse.
    #[error("unexpected tgtadm output: {0}")]
    Parse(String),
}

pub type Result<T> = std::result::Result<T, VolumeError>;

/// Who may log in to a volume's target: a node's initiator address or its initiator IQN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Initiator {
    Address(IpAddr),
    Iqn(String),
}

impl Initiator {
    /// Parses an IPv4/IPv6 address or an `iqn.YYYY-MM.…` / `eui.…` name.
    pub fn parse(s: &str) -> Result<Initiator> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Initiator::Address(ip));
        }
        let iqn_like = (s.starts_with("iqn.") || s.starts_with("eui."))
            && s.len() <= 223
            && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c));
        if iqn_like {
            return Ok(Initiator::Iqn(s.to_string()));
        }
        Err(VolumeError::Invalid(format!(
            "initiator {s:?} is neither an IP address nor an iSCSI name (iqn.YYYY-MM.domain[:id])"
        )))
    }
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Initiator::Address(a) => write!(f, "{a}"),
            Initiator::Iqn(n) => write!(f, "{n}"),
        }
    }
}

/// An open iSCSI session to a volume's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// tgtd's I_T nexus id.
    pub sid: u64,
    pub initiator: String,
    /// Connection id and peer address of each of its connections.
    pub connections: Vec<(u64, String)>,
}

/// A volume as the array has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Target IQN.
    pub iqn: String,
    /// tgtd's target id, when exported.
    pub tid: Option<u32>,
    pub size_bytes: u64,
    pub pool: String,
    /// Backing file.
    pub path: String,
    /// ACL entries (addresses or IQNs): the nodes the volume is mapped to.
    pub acl: Vec<String>,
    pub sessions: Vec<Session>,
}

/// What a node needs to connect to a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The array's portal host and port, as nodes reach it.
    pub host: String,
    pub port: u16,
    pub iqn: String,
    pub lun: u32,
    /// The CHAP account the target requires, when `[chap]` is configured (never serialized:
    /// the password stays out of databases and API answers).
    #[serde(skip)]
    pub chap: Option<Chap>,
}

impl Connection {
    /// `iscsi://host:port/iqn/lun` (QEMU's and `qemu-img`'s form).
    pub fn url(&self) -> String {
        format!("iscsi://{}:{}/{}/{}", self.host, self.port, self.iqn, self.lun)
    }
}

/// A disk array: volumes, their size, and which nodes may use them. Implementations re-read
/// their configuration at every call.
pub trait DiskArray: Send + Sync {
    /// Checks that the array answers (and that the configuration is valid).
    fn ping(&self) -> Result<()>;
    fn create(&self, name: &str, size_bytes: u64, pool: Option<&str>) -> Result<Volume>;
    /// Deletes a volume; refused while a node is mapped unless `force`.
    fn delete(&self, name: &str, force: bool) -> Result<()>;
    fn list(&self) -> Result<Vec<Volume>>;
    fn get(&self, name: &str) -> Result<Volume> {
        self.list()?.into_iter().find(|v| v.name == name).ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }
    /// Grows a volume to `size_bytes` (never shrinks).
    fn extend(&self, name: &str, size_bytes: u64) -> Result<Volume>;
    /// Allows `node` to log in to the volume; idempotent. Returns the connection information.
    fn map(&self, name: &str, node: &Initiator) -> Result<Connection>;
    /// Revokes `node`'s access and closes its open sessions; idempotent.
    fn unmap(&self, name: &str, node: &Initiator) -> Result<()>;
    /// The connection information of a volume (whoever is mapped).
    fn connection(&self, name: &str) -> Result<Connection>;
}

/// Checks a volume name: 1–63 of `a-z 0-9 . -`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid(format!(
            "volume name {name:?}: use 1–63 lowercase letters, digits, '-' or '.', starting with a letter or digit"
        )))
    }
}

/// Parses a size: bytes, or a number with K, M, G or T (powers of 1024; an optional `i`/`iB`/`B`).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let bad = || VolumeError::Invalid(format!("size {s:?}: use bytes or a number with K, M, G or T (e.g. 64M)"));
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches('B').trim_end_matches('I') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes == 0 || !bytes.is_multiple_of(512) {
        return Err(VolumeError::Invalid(format!("size {s:?}: must be a positive multiple of 512 bytes")));
    }
    Ok(bytes)
}

/// The libvirt `<disk>` that attaches a volume through QEMU's own iSCSI initiator (Debian
/// `qemu-block-extra`) as virtio disk `target_dev` (e.g. `vdb`). `cache='none'`: no host page
/// cache, so a live migration loses no write (libvirt refuses to migrate other modes). With
/// CHAP the login's password comes from the node's libvirt secret [`Chap::secret_usage`]
/// (`crate::qemu::libvirt::ensure_iscsi_secret`), never from the XML.
pub fn disk_xml(conn: &Connection, target_dev: &str) -> String {
    let auth = conn.chap.as_ref().map_or(String::new(), |c| {
        format!(
            "    <auth username='{}'>\n      <secret type='iscsi' usage='{}'/>\n    </auth>\n",
            xml_escape(&c.user),
            xml_escape(&c.secret_usage())
        )
    });
    format!(
        "<disk type='network' device='disk'>\n  <driver name='qemu' type='raw' cache='none' io='native'/>\n  \
         <source protocol='iscsi' name='{}/{}'>\n    <host name='{}' port='{}'/>\n{auth}  </source>\n  \
         <target dev='{target_dev}' bus='virtio'/>\n</disk>\n",
        xml_escape(&conn.iqn),
        conn.lun,
        xml_escape(&conn.host),
        conn.port
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;")
}

/// Checks a guest disk name (`vdb` … `vdz`).
pub fn check_target_dev(dev: &str) -> Result<()> {
    let ok = dev.len() == 3 && dev.starts_with("vd") && dev.as_bytes()[2].is_ascii_lowercase() && dev != "vda";
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid(format!("guest disk {dev:?}: use vdb … vdz")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        for bad in ["", "M", "64X", "0", "100", "-1M", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_and_initiators_are_checked() {
        assert!(check_name("data-1.a").is_ok());
        for bad in ["", "-x", "A", "a b", "a/b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Initiator::parse("10.0.0.1").unwrap(), Initiator::Address("10.0.0.1".parse().unwrap()));
        assert!(matches!(Initiator::parse("iqn.2026-12.org.amvm:node1").unwrap(), Initiator::Iqn(_)));
        assert!(Initiator::parse("notanip").is_err());
        assert!(Initiator::parse("iqn.x;rm -rf /").is_err());
    }

    #[test]
    fn disk_xml_uses_qemu_iscsi() {
        let mut c = Connection {
            host: "10.79.0.1".into(),
            port: 3260,
            iqn: "iqn.2026-12.org.amvm:v1".into(),
            lun: 1,
            chap: None,
        };
        let x = disk_xml(&c, "vdb");
        assert!(!x.contains("<auth"), "{x}");
        assert!(x.contains("protocol='iscsi' name='iqn.2026-12.org.amvm:v1/1'"), "{x}");
        assert!(x.contains("<host name='10.79.0.1' port='3260'/>"), "{x}");
        assert!(x.contains("<target dev='vdb' bus='virtio'/>"), "{x}");
        assert_eq!(c.url(), "iscsi://10.79.0.1:3260/iqn.2026-12.org.amvm:v1/1");
        c.chap = Some(Chap { user: "amvm".into(), password: "not-in-the-xml".into() });
        let x = disk_xml(&c, "vdb");
        assert!(x.contains("<auth username='amvm'>") && x.contains("usage='amvm-iscsi-amvm'"), "{x}");
        assert!(!x.contains("not-in-the-xml") && !serde_json::to_string(&c).unwrap().contains("not-in"), "{x}");
        assert!(
            check_target_dev("vda").is_err() && check_target_dev("vdc").is_ok() && check_target_dev("sdb").is_err()
        );
    }
}
