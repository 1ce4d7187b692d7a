//! A guest with a volume, live-migrated with it (issue #11): a private tgtd on this machine is
//! the disk array, `amvm lab` runs two libvirt nodes; the volume is attached to the guest
//! through QEMU's own iSCSI initiator and the guest writes a checksummed, sequence-numbered
//! pattern to it (`amvm-workload`'s volume writer, every write synced) while it migrates pre,
//! post and hybrid. After each move the volume is mapped to exactly the node the guest runs on
//! and the controller's database records that connection; each failure injected into the
//! workflow (array unreachable, map fails, migration fails, unmap fails once and for good, the
//! controller killed between steps) ends the same way. At the end the guest verifies every
//! block it wrote, and so does the test on the array's backing file.
//!
//! Needs root, libvirt's daemons, tgt and qemu-block-extra (scripts/install-deps.sh --tests);
//! skips with the reason otherwise.

#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amvm_engine::memory::Mode;
use amvm_engine::qemu::{libvirt, HybridSwitch, MigrateOptions};
use amvm_engine::volume::daemon::{free_port, TgtDaemon};
use amvm_engine::volume::{ArrayConfig, ChapConfig, DiskArray, TgtArray, VolumeError};
use amvm_host::controller::store::Store;
use amvm_host::lab::{self, node, LabConfig, LabState};
use amvm_host::volume::{self, lab_host::LabHost, Faults, GuestHost, MoveError, Step};
use lab_common::{acked, console, field, guest_image, writes_continue};

mod lab_common;

const SUBNET: &str = "10.79.0";
const IFPREFIX: &str = "avol";

/// Waits for a console line starting with `prefix` that was not there before (`seen` lines).
fn wait_line(state: &LabState, vm: &str, prefix: &str, seen: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = console(state, vm);
        let hits: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
        if hits.len() > seen {
            return hits[seen].to_string();
        }
        assert!(Instant::now() < deadline, "no {prefix:?} line from {vm} in {timeout:?}; console:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count_lines(state: &LabState, vm: &str, prefix: &str) -> usize {
    console(state, vm).lines().filter(|l| l.starts_with(prefix)).count()
}

/// The invariant: the volume is mapped to exactly the node the guest runs on, and that is the
/// connection the database records.
fn mapped_exactly_where_it_runs(state: &LabState, array: &TgtArray, store: &Store, vm: &str, vol: &str) -> String {
    let here = lab::locate(state, vm).unwrap();
    let v = array.get(vol).unwrap();
    assert_eq!(v.acl, vec![here.ip.clone()], "{vol} must be mapped to {} ({}) only", here.name, here.ip);
    let a = store.attachment(vol).unwrap().unwrap();
    assert_eq!((a.node.as_str(), a.initiator.as_str()), (here.name.as_str(), here.ip.as_str()));
    assert!(store.open_volume_moves().unwrap().is_empty(), "a move left open");
    here.name.clone()
}

fn other(n: &str) -> &'static str {
    if n == "node1" {
        "node2"
    } else {
        "node1"
    }
}

#[test]
fn a_guest_writes_to_its_volume_while_it_migrates_and_every_fault_rolls_back() {
    let extra = [
        ("/usr/sbin/tgtd", "tgt"),
        ("/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so", "qemu-block-extra (bookworm-backports)"),
    ];
    if let Some(why) = lab_common::skip_reason(&extra, false) {
        eprintln!("skipping the lab volume test: {why}");
        return;
    }
    let t0 = Instant::now();
    let image = guest_image();
    let dir = PathBuf::from("/tmp/amvm-lab-vol");
    let work = tempfile::tempdir().unwrap();
    // tgtd takes management ports up to 32767; this range is not the driver test's.
    let control = 21000 + (std::process::id() % 10000) as u16;
    let portal = free_port();
    let _tgtd = TgtDaemon::start(control, portal).expect("start tgtd");
    let cfg_path = work.path().join("volumes.toml");
    let mut cfg = ArrayConfig::local(&format!("{SUBNET}.1:{portal}"), control, &work.path().join("pool"));
    // Every target requires CHAP: each node's libvirt gets the secret before its QEMU logs in.
    cfg.chap =
        Some(ChapConfig { user: "amvm-lab".into(), password: Some("lab-chap-secret-1".into()), password_file: None });
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let array = TgtArray::new(&cfg_path);
    let db = work.path().join("controller.db");
    let store = Store::open(&db).unwrap();

    let lcfg = LabConfig {
        dir: dir.clone(),
        nodes: 2,
        vms_per_node: 1,
        memory_mib: 160,
        workload: "amvm.mode=memory amvm.mem=32 amvm.dirty=4 amvm.hot=20 amvm.load=5".into(),
        image,
        subnet: SUBNET.into(),
        ifprefix: IFPREFIX.into(),
        try_kvm: false,
        plane: None,
    };
    let state = lab::up(&lcfg, &mut |l| eprintln!("lab: {l}")).unwrap();
    eprintln!("lab up after {:.1} s", t0.elapsed().as_secs_f64());
    let mut opts = MigrateOptions::new(Mode::Pre);
    opts.bandwidth = Some(50e6);
    opts.switch = HybridSwitch::AfterFirstPass;
    let host = LabHost { state: state.clone(), opts };
    let vm = "vm1";
    let vol = "vol1";

    // Attach: QEMU's initiator on node1 logs in; the guest sees the disk and writes.
    array.create(vol, 64 << 20, None).unwrap();
    let a = volume::attach_volume(&store, &array, &host, vol, vm, "vdb").unwrap();
    assert_eq!(a.node, "node1");
    assert!(volume::attach_volume(&store, &array, &host, vol, vm, "vdc").unwrap_err().to_string().contains("already"));
    mapped_exactly_where_it_runs(&state, &array, &store, vm, vol);
    assert_eq!(array.get(vol).unwrap().sessions.len(), 1, "node1's QEMU logged in (with CHAP)");
    let n1 = state.node("node1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The guest kernel names disks in the order it finds them: the lab guest has no other
        // disk, so libvirt's vdb is the guest's /dev/vda.
        lab::console_command(n1, vm, "volume /dev/vda 40").unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let text = console(&state, vm);
        if text.contains("amvm-volume-started") {
            break;
        }
        // The hot-plugged disk may take a moment to appear in the guest.
        assert!(Instant::now() < deadline, "the guest never opened /dev/vda:\n{text}");
    }
    let started = wait_line(&state, vm, "amvm-volume-started", 0, Duration::from_secs(5));
    let run: u64 = field(&started, "run").parse().unwrap();
    let blocks: u64 = field(&started, "blocks").parse().unwrap();
    assert_eq!(blocks, 4096, "the writer uses 16 MiB of the 64 MiB volume");
    let mut last = writes_continue(&state, vm, 0);

    // Live migration with the volume, every mode, while it writes.
    for mode in [Mode::Pre, Mode::Post, Mode::Hybrid] {
        let from = lab::locate(&state, vm).unwrap().name.clone();
        let to = other(&from);
        let t = Instant::now();
        let out = volume::migrate_volume(&store, &array, &host, vol, to, Some(mode), Faults::default())
            .unwrap_or_else(|e| panic!("{mode:?} {from} -> {to}: {e}"));
        eprintln!("{mode:?} {from} -> {to} with {vol}: {:.1} s, acked {last}", t.elapsed().as_secs_f64());
        assert_eq!(out.attachment.node, to);
        assert_eq!(mapped_exactly_where_it_runs(&state, &array, &store, vm, vol), to);
        last = writes_continue(&state, vm, last);
        let sessions = array.get(vol).unwrap().sessions;
        assert!(
            sessions.iter().all(|s| s.connections.iter().all(|(_, ip)| *ip == state.node(to).unwrap().ip)),
            "only the destination's session is open: {sessions:?}"
        );
    }

    // The guest logged in with CHAP on every node; without the account no initiator gets in.
    let conn = array.connection(vol).unwrap();
    let plain = std::process::Command::new("qemu-img").args(["info", &conn.url()]).output().unwrap();
    let e = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success() && e.contains("Authentication failure"), "a login without CHAP: {e}");

    // Extend while attached and writing: QEMU resizes the guest's disk.
    let here = lab::locate(&state, vm).unwrap().clone();
    let (grown, told) = volume::extend_volume(&store, &array, &host, vol, 96 << 20).unwrap();
    assert_eq!(grown.size_bytes, 96 << 20);
    assert_eq!(told.as_deref(), Some(format!("{vm} on {}", here.name).as_str()));
    assert_eq!(libvirt::block_capacity(&here.uri(), vm, "vdb").unwrap(), 96 << 20, "QEMU's view of the disk");
    writes_continue(&state, vm, last);
    eprintln!("{vol} extended to 96 MiB while attached: {vm}'s disk resized on {}", here.name);
    std::thread::sleep(Duration::from_millis(500));
    for l in console(&state, vm).lines().filter(|l| l.contains("capacity change") || l.contains("new size")) {
        eprintln!("  guest console: {}", l.trim());
    }

    // Faults, each at its step: the guest stays or moves, the mapping follows it exactly.
    // (a) The array unreachable: a new configuration (wrong management port) applies at once.
    let here = lab::locate(&state, vm).unwrap().name.clone();
    cfg.control_port = control.wrapping_add(7);
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let e = volume::migrate_volume(&store, &array, &host, vol, other(&here), None, Faults::default()).unwrap_err();
    assert!(matches!(&e, MoveError::RolledBack { step: "check-array", .. }), "{e}");
    assert!(e.to_string().contains("unreachable"), "{e}");
    cfg.control_port = control;
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    assert_eq!(mapped_exactly_where_it_runs(&state, &array, &store, vm, vol), here);

    // (b) Mapping to the destination fails.
    let f = Faults { fail: Some(Step::MapDestination), ..Faults::default() };
    let e = volume::migrate_volume(&store, &array, &host, vol, other(&here), None, f).unwrap_err();
    assert!(matches!(&e, MoveError::RolledBack { step: "map-destination", .. }), "{e}");
    assert_eq!(mapped_exactly_where_it_runs(&state, &array, &store, vm, vol), here);

    // (c) The migration fails: the destination's mapping is undone.
    let f = Faults { fail: Some(Step::Migrate), ..Faults::default() };
    let e = volume::migrate_volume(&store, &array, &host, vol, other(&here), None, f).unwrap_err();
    assert!(matches!(&e, MoveError::RolledBack { step: "migrate", .. }), "{e}");
    assert_eq!(mapped_exactly_where_it_runs(&state, &array, &store, vm, vol), here);
    // A real one too: the destination's libvirtd refuses (the domain name is taken there).
    let dst = state.node(other(&here)).unwrap();
    let blocker = lab::domain_xml(vm, "qemu", 64, Path::new("/nonexistent"), Path::new("/nonexistent"), "");
    let c = virt::connect::Connect::open(Some(&dst.uri())).unwrap();
    let d = virt::domain::Domain::define_xml(&c, &blocker).unwrap();
    let e = volume::migrate_volume(&store, &array, &host, vol, &dst.name, Some(Mode::Pre), Faults::default());
    let _ = d.undefine();
    match e {
        Err(MoveError::RolledBack { step: "migrate", .. }) => {}
        other => panic!("a migration onto a taken name: {other:?}"),
    }
    assert_eq!(mapped_exactly_where_it_runs(&state, &array, &store, vm, vol), here);
    last = writes_continue(&state, vm, acked(&state, vm));

    // (d) Unmapping the source fails once: retried, the move completes.
    let f = Faults { fail_once: Some(Step::UnmapSource), ..Faults::default() };
    let out = volume::migrate_volume(&store, &array, &host, vol, other(&here), Some(Mode::Pre), f).unwrap();
    assert_eq!(out.unmap_retries, 1);
    let here = mapped_exactly_where_it_runs(&state, &array, &store, vm, vol);
    last = writes_continue(&state, vm, last);

    // (e) Unmapping fails for good: the move stays open; resolved once the array works again.
    let f = Faults { fail: Some(Step::UnmapSource), ..Faults::default() };
    let e = volume::migrate_volume(&store, &array, &host, vol, other(&here), Some(Mode::Post), f).unwrap_err();
    assert!(matches!(&e, MoveError::Unresolved { step: "unmap-source", .. }), "{e}");
    assert_eq!(array.get(vol).unwrap().acl.len(), 2, "both mapped until resolved");
    let r = volume::resolve_open_moves(&store, &array, &host).unwrap();
    assert_eq!(r.len(), 1);
    let here = mapped_exactly_where_it_runs(&state, &array, &store, vm, vol);
    assert_eq!(r[0].node, here);
    last = writes_continue(&state, vm, last);

    // (f) The controller killed between steps: after map, and after migrate. A new controller
    // (the same database opened again) resolves the intent record at its start.
    for (after, expect_moved) in [(Step::MapDestination, false), (Step::Migrate, true)] {
        let before = lab::locate(&state, vm).unwrap().name.clone();
        let f = Faults { crash_after: Some(after), ..Faults::default() };
        let e = volume::migrate_volume(&store, &array, &host, vol, other(&before), Some(Mode::Hybrid), f).unwrap_err();
        assert!(matches!(e, MoveError::Crashed { .. }), "{e}");
        let restarted = Store::open(&db).unwrap();
        let open = restarted.open_volume_moves().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].step, after.name());
        let r = volume::resolve_open_moves(&restarted, &array, &host).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        let now = mapped_exactly_where_it_runs(&state, &array, &restarted, vm, vol);
        assert_eq!(now != before, expect_moved, "crash after {after:?}: runs on {now}");
        last = writes_continue(&state, vm, last);
    }

    // The history: three moves per mode, the fault runs, all ended.
    let h = store.volume_moves(Some(vm), 100).unwrap();
    assert!(h.iter().filter(|m| m.state == "SUCCEEDED").count() >= 4, "{h:?}");
    assert_eq!(h.iter().filter(|m| m.state == "RESOLVED").count(), 3);
    assert!(h.iter().all(|m| m.state != "ONGOING"));

    // Every acknowledged write verifies: in the guest, then on the array's own file.
    let seen = count_lines(&state, vm, "amvm-verify");
    let here = lab::locate(&state, vm).unwrap();
    lab::console_command(here, vm, "verify").unwrap();
    let verdict = wait_line(&state, vm, "amvm-verify", seen, Duration::from_secs(60));
    eprintln!("guest: {verdict}");
    assert!(verdict.contains("ok=true") && verdict.contains("errors=0"), "{verdict}");
    let final_acked: u64 = field(&verdict, "acked").parse().unwrap();
    assert!(final_acked >= last, "{final_acked} < {last}");
    let file = array.get(vol).unwrap().path;
    let v = amvm_guest::volume::verify(Path::new(&file), run, blocks, final_acked).unwrap();
    eprintln!("array file: {v:?}");
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.written, final_acked.min(blocks));

    // Detach: the disk leaves the guest, the volume is mapped nowhere.
    volume::detach_volume(&store, &array, &host, vol).unwrap();
    assert!(array.get(vol).unwrap().acl.is_empty());
    assert!(store.attachment(vol).unwrap().is_none());
    array.delete(vol, true).unwrap();
    assert!(matches!(array.get(vol), Err(VolumeError::NotFound(_))));

    let ns: Vec<u64> = state.nodes.iter().map(|n| n.netns).collect();
    lab::down(&dir).unwrap();
    assert!(node::processes_in(&ns).is_empty(), "processes left in the lab's namespaces");
    assert!(node::links_with_prefix(IFPREFIX).is_empty(), "interfaces left");
    let _ = host.locate(vm).is_err();
    eprintln!("lab volume test: {:.1} s", t0.elapsed().as_secs_f64());
}
