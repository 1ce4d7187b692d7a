//! The lab guest (issue #10): built from Debian packages by `scripts/build-guest.sh`, booted
//! under KVM when KVM boots it and TCG otherwise, and driven from outside while it runs.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

mod common;
use common::image;

use std::time::Duration;

use amvm_engine::qemu::{Guest, GuestOptions};

/// User + system CPU seconds QEMU has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn the_guest_boots_reports_its_accelerator_and_takes_load_from_outside() {
    let img = image();
    let opts = GuestOptions { workload: "amvm.heartbeat=250".into(), ..GuestOptions::default() };
    let mut g = Guest::boot(&img, &opts).expect("boot");
    println!(
        "guest booted under {} in {:.1} s{}",
        g.accel.name(),
        g.boot_time.as_secs_f64(),
        g.fallback.as_ref().map_or_else(String::new, |r| format!(" (fell back to TCG: {r})"))
    );
    let t = Duration::from_secs(30);
    let first = g.heartbeat(t, |h| h.mode == "idle").unwrap();

    // Idle, then overloaded on purpose: QEMU's own CPU time shows the difference.
    let window = Duration::from_secs(3);
    let c0 = cpu_s(g.pid());
    std::thread::sleep(window);
    let idle = cpu_s(g.pid()) - c0;
    g.send("mode cpu").unwrap();
    g.send("load 90").unwrap();
    g.heartbeat(t, |h| h.mode == "cpu" && h.load == 90).unwrap();
    let c1 = cpu_s(g.pid());
    std::thread::sleep(window);
    let busy = cpu_s(g.pid()) - c1;
    println!("QEMU CPU over {window:?}: idle {idle:.2} s, load 90 % {busy:.2} s");
    assert!(busy > 2.0 * idle && busy > 0.3 * window.as_secs_f64(), "idle {idle:.2} s, busy {busy:.2} s");

    // The memory-bound workload dirties pages at the rate it is given.
    g.send("mode memory").unwrap();
    g.send("dirty 40").unwrap();
    let a = g.heartbeat(t, |h| h.mode == "memory" && h.dirty_mbps == 40 && h.dirtied_mb > 0).unwrap();
    let b = g.heartbeat(t, |h| h.uptime_ms >= a.uptime_ms + 2000).unwrap();
    let rate = (b.dirtied_mb - a.dirtied_mb) as f64 / ((b.uptime_ms - a.uptime_ms) as f64 / 1000.0);
    println!("dirty rate asked 40 MB/s (38.1 MiB/s), measured {rate:.1} MiB/s");
    assert!(rate > 10.0 && rate < 45.0, "{rate} MiB/s");

    // A bad command is refused with its reason; the heartbeat keeps counting.
    g.send("load lots").unwrap();
    g.wait_line("the refusal", t, |l| l.contains("amvm-error") && l.contains("number")).unwrap();
    assert!(g.heartbeat(t, |_| true).unwrap().seq > first.seq);
    let status = g.shutdown(Duration::from_secs(60)).unwrap();
    println!("QEMU exited: {status}");
}
