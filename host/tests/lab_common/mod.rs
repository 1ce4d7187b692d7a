//! Helpers shared by the lab's end-to-end tests (`lab*.rs`): what a host needs for them, the
//! controller's API as a client sees it, and the guest's console as a test reads it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amvm_host::lab::{self, LabState};
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Why the lab cannot run here, if it cannot: not root, libvirt's daemons or QEMU missing, any
/// of `extra` (path, Debian package) missing, or (with `freezer`) no cgroup v2 freezer for
/// sleeping nodes.
pub fn skip_reason(extra: &[(&str, &str)], freezer: bool) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    let base = [
        ("/usr/sbin/libvirtd", "libvirt-daemon-system"),
        ("/usr/sbin/virtlogd", "libvirt-daemon-system"),
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ];
    for (tool, pkg) in base.iter().chain(extra) {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (Debian {pkg}; scripts/install-deps.sh --tests)"));
        }
    }
    if freezer && lab::live::cgroup2_root().is_none() {
        return Some("no cgroup v2 hierarchy with the freezer (nodes cannot sleep)".into());
    }
    None
}

/// The controller's API at `listen` with a bearer token.
pub struct Api {
    pub listen: &'static str,
    pub token: String,
}

impl Api {
    pub fn get(&self, path: &str) -> Value {
        self.call("GET", path, "")
    }

    /// `method /api/v1/path` with a JSON body; asserts a 200 and returns the parsed body. A
    /// connection reset (seen once under load) is retried; anything else fails the test.
    pub fn call(&self, method: &str, path: &str, body: &str) -> Value {
        let mut last = None;
        for _ in 0..5 {
            match self.once(method, path, body) {
                Ok(text) => {
                    let (head, body) = text.split_once("\r\n\r\n").unwrap();
                    assert!(
                        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
                        "{method} {path}: {head}\n{body}"
                    );
                    return serde_json::from_str(body).unwrap();
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
        panic!("{method} {path}: {last:?}");
    }

    /// One request, the raw response (status line, headers and body).
    pub fn once(&self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(self.listen)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} /api/v1/{path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.listen,
            self.token,
            body.len()
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    }
}

/// Polls `f` every 500 ms until it gives a value. Not faster: a poll may run `amvm lab status`,
/// which asks every node's libvirtd, and on two cores busy with TCG guests faster polling
/// delays the agents' reports enough for the collector to mark nodes down.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {} s waiting for {what}", timeout.as_secs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The guest's console log on the node it runs on now.
pub fn console(state: &LabState, vm: &str) -> String {
    let n = lab::locate(state, vm).unwrap();
    std::fs::read_to_string(lab::console_log(n, vm)).unwrap_or_default()
}

/// `key`'s value in a console line of `key=value` words.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

/// The volume writer's acknowledged count from its latest console line (0 before the first).
pub fn acked(state: &LabState, vm: &str) -> u64 {
    console(state, vm)
        .lines()
        .rev()
        .find(|l| l.starts_with("amvm-volume "))
        .map_or(0, |l| field(l, "acked").parse().unwrap())
}

/// Waits (up to 30 s) until the volume writer has acknowledged more than `after`.
pub fn writes_continue(state: &LabState, vm: &str, after: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = acked(state, vm);
        if a > after {
            return a;
        }
        assert!(Instant::now() < deadline, "the volume writer stalled at {after}:\n{}", console(state, vm));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lab guest (`target/guest`), built or rebuilt when the workload or the build script is
/// newer than it.
pub fn guest_image() -> PathBuf {
    let image = repo().join("target/guest");
    let built = std::fs::metadata(image.join("initrd.img")).and_then(|m| m.modified()).ok();
    let newest = ["guest/src/main.rs", "guest/src/volume.rs", "guest/src/lib.rs", "scripts/build-guest.sh"]
        .iter()
        .filter_map(|p| std::fs::metadata(repo().join(p)).and_then(|m| m.modified()).ok())
        .max();
    if built.is_none() || newest > built {
        let st = std::process::Command::new(repo().join("scripts/build-guest.sh")).arg(&image).status().unwrap();
        assert!(st.success(), "scripts/build-guest.sh failed");
    }
    image
}
