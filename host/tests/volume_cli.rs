#![allow(clippy::tests_outside_test_module)]
//! `amvm volume` against a private tgtd (issue #11): create, list (--json), extend, delete, and
//! bad input refused with a clear error. Skips, saying why, when not root or tgt is missing.

use std::path::Path;
use std::process::Command;

use amvm_engine::volume::daemon::{free_port, TgtDaemon};
use amvm_engine::volume::ArrayConfig;

const AMVM: &str = env!("CARGO_BIN_EXE_amvm");

fn amvm(cfg: &Path, db: &Path, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(AMVM).arg("volume").arg("--config").arg(cfg).arg("--db").arg(db).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn volume_cli_creates_lists_extends_and_deletes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/sbin/tgtd").exists() {
        eprintln!("skipping volume_cli: needs root and tgtd (Debian tgt)");
        return;
    }
    let control = 31000 + (std::process::id() % 1700) as u16;
    let portal = free_port();
    let _tgtd = TgtDaemon::start(control, portal).expect("start tgtd");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("volumes.toml");
    let db = dir.path().join("state.db");
    std::fs::write(
        &cfg,
        ArrayConfig::local(&format!("127.0.0.1:{portal}"), control, &dir.path().join("pool")).to_toml(),
    )
    .unwrap();

    let (ok, out, err) = amvm(&cfg, &db, &["create", "cli1", "--size", "8M"]);
    assert!(ok, "{err}");
    assert!(out.contains("created cli1 (8388608 bytes"), "{out}");
    let (ok, out, _) = amvm(&cfg, &db, &["list", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "cli1");
    assert_eq!(v[0]["size_bytes"], 8 << 20);
    assert!(v[0]["attachment"].is_null());
    let (ok, out, _) = amvm(&cfg, &db, &["list"]);
    assert!(ok && out.contains("cli1"), "{out}");
    let (ok, _, err) = amvm(&cfg, &db, &["extend", "cli1", "--size", "16M"]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::metadata(dir.path().join("pool/cli1.img")).unwrap().len(), 16 << 20);

    for (args, says) in [
        (&["create", "cli2", "--size", "lots"][..], "size \"lots\""),
        (&["create", "Bad/Name", "--size", "8M"][..], "volume name"),
        (&["create", "cli1", "--size", "8M"][..], "already exists"),
        (&["extend", "cli1", "--size", "1M"][..], "at least"),
        (&["delete", "nope"][..], "no volume \"nope\""),
    ] {
        let (ok, _, err) = amvm(&cfg, &db, args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(says) && !err.contains("panicked"), "{args:?}: {err}");
    }
    let (ok, _, err) = amvm(&cfg, &db, &["delete", "cli1"]);
    assert!(ok, "{err}");
    let (ok, out, _) = amvm(&cfg, &db, &["list", "--json"]);
    assert!(ok && out.trim() == "[]", "{out}");
    let (ok, out, _) = amvm(&cfg, &db, &["history"]);
    assert!(ok && out.is_empty(), "{out}");
}
