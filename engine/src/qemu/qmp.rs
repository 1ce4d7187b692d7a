//! A small synchronous client for QEMU's machine protocol (QMP) over a Unix socket.
//!
//! QMP is one JSON object per line: a greeting, then `{"execute": …}` answered by `{"return": …}`
//! or `{"error": {"class", "desc"}}`, with asynchronous `{"event": …}` lines in between. The
//! client negotiates capabilities on connect, keeps the events it reads while waiting for an
//! answer (see [`Qmp::take_events`]), and turns QEMU's errors into [`QmpError::Command`] with
//! QEMU's own description.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP: QEMU closed the connection")]
    Closed,
    #[error("QMP: not JSON from QEMU: {0}")]
    Parse(String),
    #[error("QEMU refused {command}: {class}: {desc}")]
    Command { command: String, class: String, desc: String },
}

/// One QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

/// A connected, negotiated QMP session.
pub struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    events: Vec<Event>,
    /// QEMU's version from the greeting, e.g. `7.2.22`.
    pub version: String,
    /// Out-of-band execution was offered and enabled (commands that must run while QEMU's main
    /// loop is blocked, e.g. `migrate-recover` on a destination waiting for a page).
    pub oob: bool,
    next_id: u64,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").field("version", &self.version).finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects to `path`, retrying until `timeout` (QEMU creates the socket shortly after it
    /// starts), and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => return Err(QmpError::Connect { path: path.display().to_string(), source }),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut qmp =
            Qmp { writer: stream, reader, events: Vec::new(), version: String::new(), oob: false, next_id: 0 };
        let greeting = qmp.read_message()?;
        let v = &greeting["QMP"]["version"]["qemu"];
        qmp.version = format!("{}.{}.{}", v["major"], v["minor"], v["micro"]);
        let offered = greeting["QMP"]["capabilities"].as_array().is_some_and(|c| c.iter().any(|x| x == "oob"));
        if offered {
            qmp.execute("qmp_capabilities", json!({ "enable": ["oob"] }))?;
            qmp.oob = true;
        } else {
            qmp.execute("qmp_capabilities", Value::Null)?;
        }
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(QmpError::Closed);
            }
            if !line.trim().is_empty() {
                return serde_json::from_str(&line).map_err(|e| QmpError::Parse(format!("{e}: {}", line.trim())));
            }
        }
    }

    /// Runs `command` with `arguments` (`Value::Null` for none) and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        self.send(command, msg)
    }

    /// Runs `command` out of band when QEMU offered it (in band otherwise): it is answered even
    /// while QEMU's main loop is blocked, which a post-copy destination's can be, on a missing
    /// page.
    pub fn execute_oob(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        if !self.oob {
            return self.execute(command, arguments);
        }
        self.next_id += 1;
        let mut msg = json!({ "exec-oob": command, "id": self.next_id });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        self.send(command, msg)
    }

    fn send(&mut self, command: &str, msg: Value) -> Result<Value, QmpError> {
        let mut text = msg.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes())?;
        loop {
            let reply = self.read_message()?;
            if let Some(name) = reply.get("event").and_then(Value::as_str) {
                self.events.push(Event { name: name.to_string(), data: reply["data"].clone() });
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: err["class"].as_str().unwrap_or("?").to_string(),
                    desc: err["desc"].as_str().unwrap_or("?").to_string(),
                });
            }
            // Anything else (a second greeting cannot happen) is skipped.
        }
    }

    /// The events read so far, oldest first; the buffer is emptied.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU speaking the protocol's framing, to test the client's parsing only.
    fn serve(script: Vec<&'static str>) -> (tempdir::Dir, std::thread::JoinHandle<Vec<String>>) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut got = Vec::new();
            writeln!(
                w,
                r#"{{"QMP": {{"version": {{"qemu": {{"micro": 22, "minor": 2, "major": 7}}}}, "capabilities": []}}}}"#
            )
            .unwrap();
            for answer in script {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                got.push(line.trim().to_string());
                writeln!(w, "{answer}").unwrap();
            }
            got
        });
        (dir, h)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "amvm-qmp-test-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn answers_errors_and_events_are_told_apart() {
        let (dir, h) = serve(vec![
            r#"{"return": {}}"#,
            "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"active\"}}\n{\"return\": {\"status\": \"active\"}}",
            r#"{"error": {"class": "GenericError", "desc": "Postcopy is not supported"}}"#,
        ]);
        let mut q = Qmp::connect(&dir.0.join("qmp.sock"), Duration::from_secs(5)).unwrap();
        assert_eq!(q.version, "7.2.22");
        assert_eq!(q.execute("query-migrate", Value::Null).unwrap()["status"], "active");
        let e = q.execute("migrate-start-postcopy", Value::Null).unwrap_err().to_string();
        assert!(e.contains("migrate-start-postcopy") && e.contains("Postcopy is not supported"), "{e}");
        let events = q.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].name.as_str(), &events[0].data["status"]), ("MIGRATION", &json!("active")));
        assert!(q.take_events().is_empty());
        drop(q);
        let sent = h.join().unwrap();
        assert_eq!(sent[0], r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(sent[1], r#"{"execute":"query-migrate"}"#);
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let e = Qmp::connect(Path::new("/nonexistent/qmp.sock"), Duration::from_millis(50)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/qmp.sock"), "{e}");
    }
}
