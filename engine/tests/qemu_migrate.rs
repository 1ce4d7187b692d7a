//! Live migration of a real QEMU guest between two QEMU processes over QMP (issue #10): every
//! mode, the guest's heartbeat continuing on the destination, the report against QEMU's own
//! statistics. TCG when KVM does not boot the guest (printed).

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

mod common;
use common::image;

use std::time::Duration;

use amvm_engine::memory::Mode;
use amvm_engine::qemu::{migrate, Guest, GuestImage, GuestOptions, HybridSwitch, MigrateOptions, Phase};

/// Migrates `src` into a fresh destination and checks the guest lives on there.
fn hop(img: &GuestImage, gopts: &GuestOptions, src: Guest, opts: &MigrateOptions) -> Guest {
    let mut src = src;
    let before = src.heartbeat(Duration::from_secs(30), |_| true).expect("heartbeat before");
    let mut dst = Guest::incoming(img, gopts, src.accel).expect("start destination");
    assert_eq!(dst.run_state().unwrap(), "inmigrate");
    let mut samples = Vec::new();
    let report = migrate(&mut src, &mut dst, opts, &mut |p| samples.push(p.clone())).expect("migrate");
    println!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.destination_state, "running");
    assert_eq!(src.run_state().unwrap(), "postmigrate", "the source is stopped, not running twice");
    // The report is QEMU's: bytes at least the guest's touched memory, never going backwards.
    assert!(report.bytes_transferred > 16 << 20, "{report:?}");
    assert!(samples.windows(2).all(|w| w[1].bytes_sent >= w[0].bytes_sent), "bytes sent never go backwards");
    assert_eq!(samples.last().unwrap().phase, Phase::Completed);
    match opts.mode {
        Mode::Pre => {
            assert_eq!(report.completed_as, "pre-copy");
            assert_eq!(report.page_faults, 0);
            assert!(samples.iter().all(|p| p.phase != Phase::PostCopy));
        }
        Mode::Post => {
            assert_eq!(report.completed_as, "post-copy");
            assert!(report.page_faults > 0, "post-copy faults pages in: {report:?}");
            assert_eq!(report.link_recoveries, u32::from(opts.cut_link_in_postcopy), "{report:?}");
        }
        Mode::Hybrid => {
            if report.completed_as == "post-copy" {
                assert!(report.switched_at_pass.unwrap() >= 2, "{report:?}");
            }
        }
    }
    let mut src_tail = Vec::new();
    while let Ok(l) = src.wait_line("console", Duration::from_millis(200), |_| true) {
        src_tail.push(l);
    }
    assert!(!src_tail.iter().any(|l| l.contains("BUG") || l.contains("panic")), "source console: {src_tail:#?}");
    src.kill();
    assert!(dst.is_running(), "destination QEMU exited");
    let Ok(after) = dst.heartbeat(Duration::from_secs(30), |h| h.seq > before.seq) else {
        let mut tail = Vec::new();
        while let Ok(l) = dst.wait_line("console", Duration::from_secs(2), |_| true) {
            tail.push(l);
        }
        panic!("no heartbeat on the destination after {report:?}; its console: {tail:#?}");
    };
    assert!(after.uptime_ms > before.uptime_ms);
    // The console follows the guest: a command sent to the destination reaches the workload.
    dst.send("load 10").unwrap();
    dst.heartbeat(Duration::from_secs(30), |h| h.load == 10).expect("command after migration");
    dst
}

#[test]
fn a_guest_migrates_pre_post_and_hybrid_keeps_running_and_survives_a_cut_link() {
    let img = image();
    let gopts = GuestOptions {
        memory_mb: 256,
        workload: "amvm.mode=memory amvm.mem=96 amvm.dirty=24 amvm.hot=20 amvm.heartbeat=200".into(),
        ..GuestOptions::default()
    };
    let g = Guest::boot(&img, &gopts).expect("boot");
    println!(
        "guest under {}{}",
        g.accel.name(),
        g.fallback.as_ref().map_or_else(String::new, |r| format!(" (fell back to TCG: {r})"))
    );
    let link = Some(50e6);
    let mut g = g;
    for (mode, switch) in [
        (Mode::Pre, HybridSwitch::AtStall),
        (Mode::Post, HybridSwitch::AtStall),
        (Mode::Hybrid, HybridSwitch::AtStall),
        (Mode::Hybrid, HybridSwitch::AfterFirstPass),
    ] {
        let opts = MigrateOptions { switch, bandwidth: link, ..MigrateOptions::new(mode) };
        g = hop(&img, &gopts, g, &opts);
    }
    // The stream cut during post-copy: recovered, the guest alive on exactly one side (`hop`
    // checks the source is stopped and the destination's heartbeat continues).
    let opts = MigrateOptions { bandwidth: link, cut_link_in_postcopy: true, ..MigrateOptions::new(Mode::Post) };
    g = hop(&img, &gopts, g, &opts);
    g.shutdown(Duration::from_secs(30)).expect("clean power-off");
}
