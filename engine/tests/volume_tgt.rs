#![allow(clippy::tests_outside_test_module)]
//! The tgtd driver against a real, private tgtd (issue #11): create, list, extend, map (ACL by
//! address and IQN), unmap, delete; QEMU's iSCSI initiator sees exactly what the ACL allows;
//! the configuration is re-read at every call (a new pool, an unreachable array); tgtadm's own
//! errors come back. Skips, saying why, when not root or tgt / qemu-block-extra is missing.

use std::path::Path;
use std::process::Command;

use amvm_engine::volume::daemon::{free_port, TgtDaemon};
use amvm_engine::volume::{ArrayConfig, ChapConfig, DiskArray, Initiator, Pool, SshConfig, TgtArray, VolumeError};

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (tgtd needs root)".into());
    }
    if !Path::new("/usr/sbin/tgtd").exists() {
        return Some("tgtd missing (Debian tgt; scripts/install-deps.sh --tests)".into());
    }
    None
}

fn qemu_iscsi() -> bool {
    Path::new("/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so").exists()
}

/// `qemu-img info` through QEMU's iSCSI initiator: the size, or its error.
fn qemu_size(url: &str) -> Result<u64, String> {
    let out = Command::new("qemu-img").args(["info", "--output=json", url]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["virtual-size"].as_u64().ok_or_else(|| "no virtual-size".into())
}

#[test]
fn tgt_driver_end_to_end() {
    if let Some(r) = skip_reason() {
        eprintln!("skipping tgt_driver_end_to_end: {r}");
        return;
    }
    // tgtd takes management ports up to 32767.
    let control = 1000 + (std::process::id() % 20000) as u16;
    let portal = free_port();
    let tgtd = TgtDaemon::start(control, portal).expect("start tgtd");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("volumes.toml");
    let pool_a = dir.path().join("pool-a");
    let mut cfg = ArrayConfig::local(&format!("127.0.0.1:{portal}"), control, &pool_a);
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let array = TgtArray::new(&cfg_path);
    array.ping().unwrap();

    // Create and list.
    let v = array.create("data1", 64 << 20, None).unwrap();
    assert_eq!(v.size_bytes, 64 << 20);
    assert_eq!(std::fs::metadata(pool_a.join("data1.img")).unwrap().len(), 64 << 20);
    assert!(matches!(array.create("data1", 1 << 20, None), Err(VolumeError::Exists(_))));
    assert!(matches!(array.create("Bad Name", 1 << 20, None), Err(VolumeError::Invalid(_))));
    let list = array.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "data1");
    assert_eq!(list[0].pool, "default");
    assert!(list[0].acl.is_empty());

    // Not mapped: QEMU's initiator is refused; mapped by address: it sees the disk.
    let conn = array.connection("data1").unwrap();
    if qemu_iscsi() {
        let e = qemu_size(&conn.url()).unwrap_err();
        assert!(e.contains("Target not found") || e.contains("Failed to log in"), "{e}");
    }
    let me = Initiator::parse("127.0.0.1").unwrap();
    let c2 = array.map("data1", &me).unwrap();
    assert_eq!(c2, conn);
    array.map("data1", &me).unwrap(); // idempotent
    let iqn = Initiator::parse("iqn.2026-12.org.amvm:test-node").unwrap();
    array.map("data1", &iqn).unwrap();
    assert_eq!(array.get("data1").unwrap().acl, vec!["127.0.0.1", "iqn.2026-12.org.amvm:test-node"]);
    if qemu_iscsi() {
        assert_eq!(qemu_size(&conn.url()).unwrap(), 64 << 20);
    } else {
        eprintln!("qemu-block-extra missing: the initiator checks are skipped");
    }

    // Extend: the initiator sees the new size; shrinking is refused.
    array.extend("data1", 96 << 20).unwrap();
    assert_eq!(array.get("data1").unwrap().size_bytes, 96 << 20);
    if qemu_iscsi() {
        assert_eq!(qemu_size(&conn.url()).unwrap(), 96 << 20);
    }
    assert!(matches!(array.extend("data1", 1 << 20), Err(VolumeError::Invalid(_))));

    // Delete refuses a mapped volume; unmap (idempotent), then delete.
    assert!(array.delete("data1", false).unwrap_err().to_string().contains("unmap it first"));
    array.unmap("data1", &me).unwrap();
    array.unmap("data1", &me).unwrap();
    array.unmap("data1", &iqn).unwrap();
    if qemu_iscsi() {
        assert!(qemu_size(&conn.url()).is_err(), "unmapped yet readable");
    }
    assert!(matches!(array.map("nope", &me), Err(VolumeError::NotFound(_))));

    // Configuration re-read at every call: a new pool is usable at once.
    let pool_b = dir.path().join("pool-b");
    cfg.pools.insert("fast".into(), Pool::files(&pool_b));
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let f = array.create("fast1", 1 << 20, Some("fast")).unwrap();
    assert_eq!(f.pool, "fast");
    assert!(pool_b.join("fast1.img").exists());
    assert!(array.create("x", 1 << 20, Some("nope")).unwrap_err().to_string().contains("no pool"));

    // tgtd restarted: its targets are gone, the files export again on the next list.
    let pid = tgtd.pid();
    drop(tgtd);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err()
    );
    // The array unreachable: a clear error naming the command.
    let e = array.list().unwrap_err();
    assert!(matches!(e, VolumeError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("tgtadm"), "{e}");
    let tgtd = TgtDaemon::start(control, portal).expect("restart tgtd");
    let names: Vec<String> = array.list().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, vec!["data1", "fast1"]);

    // A new array address (another management port) applies at the next call.
    cfg.control_port = control.wrapping_add(1);
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    assert!(matches!(array.ping(), Err(VolumeError::Unreachable { .. })));
    cfg.control_port = control;
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    array.ping().unwrap();

    // A broken configuration file: a clear error, no panic.
    std::fs::write(&cfg_path, "portal = 1\n").unwrap();
    assert!(matches!(array.list(), Err(VolumeError::Config(_))));
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();

    array.delete("data1", false).unwrap();
    array.delete("fast1", true).unwrap();
    assert!(array.list().unwrap().is_empty());
    assert!(!pool_a.join("data1.img").exists());
    drop(tgtd);
}

/// `qemu-img info` logging in with CHAP account `user` / `password`.
fn qemu_size_chap(conn: &amvm_engine::volume::Connection, user: &str, password: &str) -> Result<u64, String> {
    let opts = format!(
        "driver=iscsi,transport=tcp,portal={}:{},target={},lun={},user={user},password-secret=s0",
        conn.host, conn.port, conn.iqn, conn.lun
    );
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "--object", &format!("secret,id=s0,data={password}"), "--image-opts", &opts])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["virtual-size"].as_u64().ok_or_else(|| "no virtual-size".into())
}

#[test]
fn chap_is_required_and_a_changed_password_applies_at_the_next_call() {
    if let Some(r) = skip_reason() {
        eprintln!("skipping the CHAP test: {r}");
        return;
    }
    if !qemu_iscsi() {
        eprintln!("skipping the CHAP test: QEMU's iSCSI initiator (qemu-block-extra) is missing");
        return;
    }
    let control = 1000 + ((std::process::id() + 7000) % 20000) as u16;
    let portal = free_port();
    let _tgtd = TgtDaemon::start(control, portal).expect("start tgtd");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("volumes.toml");
    let secret = dir.path().join("chap.secret");
    std::fs::write(&secret, "first-password-1\n").unwrap();
    let mut cfg = ArrayConfig::local(&format!("127.0.0.1:{portal}"), control, &dir.path().join("pool"));
    cfg.chap = Some(ChapConfig { user: "amvm".into(), password: None, password_file: Some(secret.clone()) });
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let array = TgtArray::new(&cfg_path);
    let me = Initiator::parse("127.0.0.1").unwrap();

    array.create("c1", 8 << 20, None).unwrap();
    array.create("c2", 8 << 20, None).unwrap();
    let conn = array.map("c1", &me).unwrap();
    let c2 = array.map("c2", &me).unwrap();
    let chap = conn.chap.clone().expect("the connection names the CHAP account");
    assert_eq!((chap.user.as_str(), chap.password.as_str()), ("amvm", "first-password-1"));
    assert!(!serde_json::to_string(&conn).unwrap().contains("first-password"), "the password is serialized");

    // Mapped, but a login without the account (or with a wrong password) is refused.
    for (what, r) in [
        ("no account", qemu_size(&conn.url())),
        ("a wrong password", qemu_size_chap(&conn, "amvm", "wrong-password-1")),
    ] {
        let e = r.unwrap_err();
        assert!(e.contains("Authentication failure") || e.contains("Failed to log in"), "{what}: {e}");
    }
    assert_eq!(qemu_size_chap(&conn, "amvm", "first-password-1").unwrap(), 8 << 20);
    assert_eq!(qemu_size_chap(&c2, "amvm", "first-password-1").unwrap(), 8 << 20);

    // A new password in the file: the next call applies it to every volume's target.
    std::fs::write(&secret, "second-password-2\n").unwrap();
    let conn = array.map("c1", &me).unwrap();
    assert_eq!(conn.chap.as_ref().unwrap().password, "second-password-2");
    for c in [&conn, &c2] {
        let e = qemu_size_chap(c, "amvm", "first-password-1").unwrap_err();
        assert!(e.contains("Authentication failure") || e.contains("Failed to log in"), "{}: {e}", c.iqn);
        assert!(qemu_size(&c.url()).is_err(), "{}: open without CHAP after the account was re-created", c.iqn);
        assert_eq!(qemu_size_chap(c, "amvm", "second-password-2").unwrap(), 8 << 20, "{}", c.iqn);
    }
    let shown = array.list().unwrap();
    assert!(shown.iter().all(|v| v.acl == ["127.0.0.1"]), "{shown:?}");

    // An invalid [chap] is a clear error and changes nothing.
    std::fs::write(&secret, "short\n").unwrap();
    let e = array.map("c1", &me).unwrap_err().to_string();
    assert!(e.contains("[chap]") && e.contains("12–128"), "{e}");
    assert_eq!(qemu_size_chap(&conn, "amvm", "second-password-2").unwrap(), 8 << 20);

    // [chap] removed: the next map of a volume unbinds the account from its target.
    cfg.chap = None;
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let conn = array.map("c1", &me).unwrap();
    assert!(conn.chap.is_none());
    assert_eq!(qemu_size(&conn.url()).unwrap(), 8 << 20, "no CHAP once [chap] is gone");
    array.delete("c1", true).unwrap();
    array.delete("c2", true).unwrap();
}

/// Why LV-backed volumes cannot be tested on this machine, if they cannot.
fn lvm_skip_reason() -> Option<String> {
    if !Path::new("/usr/sbin/lvcreate").exists() && !Path::new("/sbin/lvcreate").exists() {
        return Some("LVM is missing (Debian lvm2; scripts/install-deps.sh --tests)".into());
    }
    match Command::new("dmsetup").arg("version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "the kernel has no device-mapper, so LVM cannot activate a logical volume (`dmsetup version`: {})",
            String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("failed")
        )),
        Err(e) => Some(format!("dmsetup cannot run: {e}")),
    }
}

fn sh(cmd: &[&str]) -> String {
    let o = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A volume group on a loop device, removed with everything in it when dropped.
struct TestVg {
    vg: String,
    loopdev: String,
}

impl Drop for TestVg {
    fn drop(&mut self) {
        let _ = Command::new("vgremove").args(["-f", &self.vg]).output();
        let _ = Command::new("pvremove").args(["-y", &self.loopdev]).output();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).output();
    }
}

#[test]
fn lv_backed_volumes() {
    let lvm = ["/usr/sbin/lvcreate", "/sbin/lvcreate"].iter().any(|p| Path::new(p).exists());
    if let Some(r) = skip_reason().or_else(|| (!lvm).then(|| "LVM is missing (Debian lvm2)".to_string())) {
        eprintln!("skipping the LV-backed volume test: {r}");
        return;
    }
    // Without device-mapper LVM still keeps its metadata (a volume group on a loop device), but
    // cannot activate a logical volume: the driver's create must then fail cleanly.
    let no_dm = lvm_skip_reason();
    let control = 1000 + ((std::process::id() + 13000) % 20000) as u16;
    let portal = free_port();
    let _tgtd = TgtDaemon::start(control, portal).expect("start tgtd");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pv.img");
    std::fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
    let loopdev = sh(&["losetup", "-f", "--show", img.to_str().unwrap()]);
    let vg = TestVg { vg: format!("amvmtest{}", std::process::id()), loopdev: loopdev.clone() };
    sh(&["pvcreate", "-y", &loopdev]);
    sh(&["vgcreate", &vg.vg, &loopdev]);
    // A logical volume of the group that is not a volume stays out of the driver's way (it can
    // only be created, active, with device-mapper).
    if no_dm.is_none() {
        sh(&["lvcreate", "-y", "-L", "4m", "-n", "notours", &vg.vg]);
    }

    let cfg_path = dir.path().join("volumes.toml");
    let mut cfg = ArrayConfig::local(&format!("127.0.0.1:{portal}"), control, &dir.path().join("files"));
    cfg.pools.insert("lv".into(), Pool::lvm(&vg.vg));
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let array = TgtArray::new(&cfg_path);

    if let Some(why) = no_dm {
        let e = array.create("lv1", 8 << 20, Some("lv")).unwrap_err().to_string();
        assert!(e.contains("lvcreate") && e.contains("device-mapper"), "a clear error: {e}");
        assert!(array.list().unwrap().is_empty(), "nothing exported after the failed create");
        let left = sh(&["lvs", "--noheadings", "-o", "lv_name", &vg.vg]);
        assert_eq!(left, "", "no logical volume left by the failed create");
        eprintln!("LV-backed create failed cleanly ({e}); map/extend/delete of a real LV skipped: {why}");
        return;
    }
    let v = array.create("lv1", 8 << 20, Some("lv")).unwrap();
    assert_eq!(
        (v.path.as_str(), v.size_bytes, v.pool.as_str()),
        (format!("/dev/{}/lv1", vg.vg).as_str(), 8 << 20, "lv")
    );
    let tags = sh(&["lvs", "--noheadings", "-o", "lv_tags", &format!("{}/lv1", vg.vg)]);
    assert_eq!(tags, "amvm-volume");
    let listed = array.list().unwrap();
    assert_eq!(listed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["lv1"], "only the tagged LV");
    let me = Initiator::parse("127.0.0.1").unwrap();
    let conn = array.map("lv1", &me).unwrap();
    if qemu_iscsi() {
        assert_eq!(qemu_size(&conn.url()).unwrap(), 8 << 20);
    }
    let v = array.extend("lv1", 16 << 20).unwrap();
    assert_eq!(v.size_bytes, 16 << 20);
    if qemu_iscsi() {
        assert_eq!(qemu_size(&conn.url()).unwrap(), 16 << 20, "the LUN's new size");
    }
    array.delete("lv1", true).unwrap();
    let left = sh(&["lvs", "--noheadings", "-o", "lv_name", &vg.vg]);
    assert_eq!(left, "notours", "lv1 removed, the other LV kept");
}

/// A private sshd on 127.0.0.1 (the "array host"), with its own host key and one client key;
/// stopped when dropped.
struct TestSshd {
    child: Option<std::process::Child>,
    port: u16,
    client_key: std::path::PathBuf,
    known_hosts: std::path::PathBuf,
}

impl TestSshd {
    fn start(dir: &Path) -> TestSshd {
        let key = |name: &str| {
            let p = dir.join(name);
            sh(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "amvm-test", "-f", p.to_str().unwrap()]);
            p
        };
        let host_key = key("host_key");
        let client_key = key("client_key");
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\n",
                host_key.display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start sshd");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        TestSshd { child: Some(child), port, client_key, known_hosts }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn the_driver_runs_its_commands_on_the_array_host_over_ssh() {
    if let Some(r) = skip_reason() {
        eprintln!("skipping the SSH driver test: {r}");
        return;
    }
    if !Path::new("/usr/sbin/sshd").exists() || !Path::new("/usr/bin/ssh").exists() {
        eprintln!("skipping the SSH driver test: sshd / ssh missing (Debian openssh-server, openssh-client)");
        return;
    }
    let control = 1000 + ((std::process::id() + 3000) % 20000) as u16;
    let portal = free_port();
    let _tgtd = TgtDaemon::start(control, portal).expect("start tgtd");
    let dir = tempfile::tempdir().unwrap();
    let mut sshd = TestSshd::start(dir.path());
    let cfg_path = dir.path().join("volumes.toml");
    let pool = dir.path().join("pool");
    let mut cfg = ArrayConfig::local(&format!("127.0.0.1:{portal}"), control, &pool);
    let ssh = SshConfig {
        host: "127.0.0.1".into(),
        user: Some("root".into()),
        port: Some(sshd.port),
        identity: Some(sshd.client_key.clone()),
        known_hosts: Some(sshd.known_hosts.clone()),
        connect_timeout_s: 3,
    };
    // The host key is checked: with an empty known_hosts the array host is refused.
    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    cfg.ssh = Some(SshConfig { known_hosts: Some(empty), ..ssh.clone() });
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let array = TgtArray::new(&cfg_path);
    let e = array.ping().unwrap_err();
    assert!(matches!(e, VolumeError::Unreachable { .. }) && e.to_string().contains("ost key"), "{e}");

    cfg.ssh = Some(ssh);
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    array.ping().unwrap();
    let v = array.create("remote1", 8 << 20, None).unwrap();
    assert_eq!(v.size_bytes, 8 << 20);
    assert_eq!(std::fs::metadata(pool.join("remote1.img")).unwrap().len(), 8 << 20, "created on the array host");
    let conn = array.map("remote1", &Initiator::parse("127.0.0.1").unwrap()).unwrap();
    assert_eq!(array.get("remote1").unwrap().acl, ["127.0.0.1"]);
    if qemu_iscsi() {
        assert_eq!(qemu_size(&conn.url()).unwrap(), 8 << 20);
    }
    assert_eq!(array.extend("remote1", 12 << 20).unwrap().size_bytes, 12 << 20);
    assert_eq!(array.list().unwrap().iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["remote1"]);
    // tgtadm's own error comes back through ssh.
    let e = array.create("remote1", 1 << 20, None).unwrap_err();
    assert!(matches!(e, VolumeError::Exists(_)), "{e}");
    array.delete("remote1", true).unwrap();
    assert!(!pool.join("remote1.img").exists());

    // The array host gone: unreachable, a clear error.
    sshd.stop();
    let e = array.ping().unwrap_err();
    assert!(matches!(e, VolumeError::Unreachable { .. }), "{e}");
    eprintln!("over ssh: create, map, extend, list, delete on the array host; then: {e}");
}
