//! `amvm lab` end to end (issue #10): three libvirt nodes in namespaces on this machine, one
//! guest migrated pre, post and hybrid both ways through the libvirt backend, its heartbeat
//! continuing on each destination, then `down` leaving nothing behind. Needs root and libvirt's
//! daemons (scripts/install-deps.sh --tests); skips with the reason otherwise.

#![allow(clippy::tests_outside_test_module)]

use std::path::PathBuf;
use std::time::Duration;

use amvm_engine::memory::Mode;
use amvm_engine::qemu::{HybridSwitch, MigrateOptions};
use amvm_host::lab::{self, node, LabConfig};

mod lab_common;

#[test]
fn three_node_lab_migrates_a_guest_every_way_and_cleans_up() {
    if let Some(why) = lab_common::skip_reason(&[], false) {
        eprintln!("skipping the lab test: {why}");
        return;
    }
    let image = lab_common::guest_image();
    // Parallel runs on one machine (several worktrees) pick their own lab with these.
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let dir = PathBuf::from(var("AMVM_LAB_TEST_DIR", &std::env::temp_dir().join("amvm-lab-test").to_string_lossy()));
    let ifprefix = var("AMVM_LAB_TEST_IFPREFIX", "amvmt");
    let cfg = LabConfig {
        dir: dir.clone(),
        nodes: 3,
        vms_per_node: 1,
        memory_mib: 192,
        workload: "amvm.mode=memory amvm.mem=48 amvm.dirty=8 amvm.hot=20 amvm.load=10".into(),
        image,
        subnet: var("AMVM_LAB_TEST_SUBNET", "10.79.0"),
        ifprefix: ifprefix.clone(),
        try_kvm: false,
        plane: None,
    };
    let mut say = |l: &str| eprintln!("lab: {l}");
    // A first lab left behind, as after a crash: `up` must clean it up first.
    let first = lab::up(&LabConfig { nodes: 2, vms_per_node: 0, ..cfg.clone() }, &mut say).unwrap();
    let old_holders: Vec<u32> = first.nodes.iter().map(|n| n.holder_pid).collect();
    let state = lab::up(&cfg, &mut say).unwrap();
    // (Namespace inodes are reused by the kernel, so the old namespaces are checked by holder.)
    for pid in old_holders {
        // Dead, or a zombie of this test process (its parent), which never reaps it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("");
        assert!(stat.is_empty() || state == "Z", "the crashed lab's holder {pid} survived ({state})");
    }
    assert_eq!(state.nodes.len(), 3);
    assert_eq!(state.accel, "tcg");

    let st = lab::status(&state);
    for n in &st.nodes {
        assert_eq!(n.state, "up", "{}", n.name);
        assert_eq!(n.hostname.as_deref(), Some(n.name.as_str()), "each daemon reports its own host name");
        assert_eq!(n.vms.len(), 1);
    }

    lab::set_load(&state, "vm1", 30).unwrap();
    let n1 = state.node("node1").unwrap();
    let hb = lab::wait_heartbeat(n1, "vm1", None, Duration::from_secs(10)).unwrap();
    let hb = lab::wait_heartbeat(n1, "vm1", Some(hb.seq), Duration::from_secs(10)).unwrap();
    assert_eq!(hb.load, 30, "the console command reached the workload");

    let hops = [
        (Mode::Pre, "node2"),
        (Mode::Pre, "node1"),
        (Mode::Post, "node3"),
        (Mode::Post, "node1"),
        (Mode::Hybrid, "node2"),
        (Mode::Hybrid, "node1"),
    ];
    let mut seq = hb.seq;
    for (mode, to) in hops {
        let mut opts = MigrateOptions::new(mode);
        opts.bandwidth = Some(50e6);
        // The first full pass, then post-copy: a real hybrid even where pre-copy would converge.
        opts.switch = HybridSwitch::AfterFirstPass;
        let mut phases = Vec::new();
        let m = lab::migrate(&state, "vm1", to, &opts, None, &mut |p| phases.push(p.phase)).unwrap();
        let (report, from) = (m.report, m.from);
        eprintln!("{mode:?} {from} -> {to}: {report:?}");
        let dst = state.node(to).unwrap();
        assert_eq!(lab::locate(&state, "vm1").unwrap().name, to, "runs on the destination");
        let src_st = lab::status(&state);
        let on_src = src_st.nodes.iter().find(|n| n.name == from).unwrap();
        assert!(on_src.vms.iter().all(|v| v.name != "vm1"), "the source keeps no definition of vm1");
        assert_eq!(report.destination_state, "running");
        assert!(report.bytes_transferred > 0 && report.total_time_ms > 0.0);
        assert!(!phases.is_empty());
        match mode {
            Mode::Pre => assert_eq!(report.completed_as, "pre-copy"),
            Mode::Post => assert_eq!(report.completed_as, "post-copy"),
            Mode::Hybrid => assert!(report.passes >= 1),
        }
        let next = lab::wait_heartbeat(dst, "vm1", Some(seq), Duration::from_secs(15))
            .unwrap_or_else(|| panic!("no heartbeat after {seq} on {to} after {mode:?}"));
        assert!(next.seq > seq);
        seq = next.seq;
    }

    let ns: Vec<u64> = state.nodes.iter().map(|n| n.netns).collect();
    lab::down(&dir).unwrap();
    assert!(node::processes_in(&ns).is_empty(), "processes left in the lab's namespaces");
    assert!(node::links_with_prefix(&ifprefix).is_empty(), "interfaces left");
    assert!(!dir.exists(), "lab directory left");
}
