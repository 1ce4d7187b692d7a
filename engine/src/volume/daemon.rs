//! A private `tgtd` (tests and the lab): its own management port (`-C`) and iSCSI portal, run in
//! the foreground as our child and ended by its PID when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Result, VolumeError};

#[derive(Debug)]
pub struct TgtDaemon {
    child: Child,
    pub control_port: u16,
    pub portal_port: u16,
}

impl TgtDaemon {
    /// Starts `tgtd -f -C CONTROL --iscsi portal=0.0.0.0:PORTAL` and waits until `tgtadm`
    /// answers (10 s). tgtd takes management ports up to 32767.
    pub fn start(control_port: u16, portal_port: u16) -> Result<TgtDaemon> {
        if control_port > 32767 {
            return Err(VolumeError::Invalid(format!("tgtd management port {control_port}: at most 32767")));
        }
        let cmd = format!("tgtd -f -C {control_port} --iscsi portal=0.0.0.0:{portal_port}");
        let child = Command::new("tgtd")
            .args(["-f", "-C", &control_port.to_string(), "--iscsi", &format!("portal=0.0.0.0:{portal_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| VolumeError::Unreachable { cmd: cmd.clone(), detail: format!("{e} (Debian tgt)") })?;
        let mut d = TgtDaemon { child, control_port, portal_port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = Command::new("tgtadm")
                .args(["-C", &control_port.to_string(), "--op", "show", "--mode", "sys"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let listening = std::net::TcpStream::connect(("127.0.0.1", portal_port)).is_ok();
            if ok && listening {
                return Ok(d);
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = d.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(VolumeError::Unreachable { cmd, detail: format!("tgtd exited ({st}): {}", err.trim()) });
            }
            if Instant::now() > deadline {
                return Err(VolumeError::Unreachable { cmd, detail: "tgtd did not answer within 10 s".into() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TgtDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}", self.control_port));
        let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}.lock", self.control_port));
    }
}

/// A TCP port free now on all addresses (the kernel's pick).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}
