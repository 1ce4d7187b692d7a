//! End-to-end: `amvm migrate` runs the real binary twice (destination and source processes)
//! and prints one JSON report.
#![cfg(test)]

use std::process::{Command, Output};

use amvm_tests::amvm_bin;

fn amvm(args: &[&str]) -> Output {
    Command::new(amvm_bin()).args(args).output().expect("run amvm")
}

#[test]
fn migrate_moves_a_guest_between_two_processes_and_reports_json() {
    for mode in ["hybrid", "post", "pre"] {
        // Debug builds write pages slowly: modest rates; a cap keeps the full round measurable.
        let out = amvm(&[
            "migrate",
            "--mode",
            mode,
            "--mem",
            "32M",
            "--workload",
            "memory",
            "--write-rate",
            "4000",
            "--read-rate",
            "4000",
            "--bandwidth",
            "800mbit",
            "--warmup-ms",
            "100",
            "--push-delay-ms",
            "100",
            "--json",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: amvm migrate failed: {stderr}");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{mode}: {e}: {text}"));
        assert_eq!(v["mode"], mode);
        assert_eq!(v["mem_bytes"], 32u64 << 20);
        assert_eq!(v["verified"], true, "{mode}: {v}");
        for f in [
            "total_time_ms",
            "downtime_ms",
            "bytes_transferred",
            "page_faults",
            "prefetch_hits",
            "push_discarded",
            "fault_latency_p50_us",
            "fault_latency_p99_us",
        ] {
            assert!(v[f].as_f64().is_some_and(|x| x >= 0.0), "{mode}: field {f} missing in {v}");
        }
        for f in ["v_mig", "t_mig", "faults"] {
            assert!(v["model"][f].as_f64().is_some_and(|x| x >= 0.0), "{mode}: model.{f} missing in {v}");
        }
        // Every byte of the guest crossed the link (plus headers), and the run took real time.
        assert!(v["bytes_transferred"].as_u64().is_some_and(|b| b >= 32 << 20), "{mode}: {v}");
        assert!(v["total_time_ms"].as_f64().is_some_and(|t| t > 0.0), "{mode}: {v}");
        match mode {
            "pre" => assert_eq!(v["page_faults"], 0, "{v}"),
            // Push is held back 100 ms after resume: the guest's first accesses must fault.
            _ => assert!(v["page_faults"].as_u64().is_some_and(|f| f > 0), "{mode}: {v}"),
        }
    }
}

#[test]
fn migrate_rejects_bad_arguments_clearly() {
    let out = amvm(&["migrate", "--mode", "sideways", "--mem", "32M", "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mode"), "{err}");
    let out = amvm(&["migrate", "--mem", "12Q", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad size"));
}
