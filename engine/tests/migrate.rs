//! End-to-end migrations on real memory: source and destination halves over loopback TCP,
//! every mode × every workload, each ending with the verifier's proof that no write was lost.

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use amvm_engine::memory::dest::{run_dest, DestOptions};
    use amvm_engine::memory::source::run_source;
    use amvm_engine::memory::workload::WorkloadSpec;
    use amvm_engine::memory::{DestStats, MemoryError, MigrationReport, Mode, SourceConfig};

    const MEM: u64 = 32 << 20;

    fn migrate(cfg: SourceConfig) -> (Result<MigrationReport, MemoryError>, Result<DestStats, MemoryError>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let opts = DestOptions { run_after: Duration::from_millis(50), ..DestOptions::default() };
        let dest = std::thread::spawn(move || run_dest(&l, &opts));
        let src = run_source(&cfg, &addr, &|_| {});
        (src, dest.join().expect("dest thread"))
    }

    fn config(mode: Mode, workload: &str) -> SourceConfig {
        let mut spec = WorkloadSpec::preset(workload).expect("preset");
        // Debug builds write pages ~20x slower than release: keep rates the test machine sustains.
        spec.writes_per_s = spec.writes_per_s.min(4_000.0);
        spec.reads_per_s = spec.reads_per_s.min(4_000.0);
        spec.spin = false;
        let mut cfg = SourceConfig::new(mode, MEM, spec);
        cfg.warmup = Duration::from_millis(100);
        // A cap keeps the full round long enough for the workload to dirty pages.
        cfg.bandwidth = Some(200e6);
        cfg.max_rounds = 6;
        cfg
    }

    fn check(mode: Mode, workload: &str) {
        let mut cfg = config(mode, workload);
        if mode == Mode::Post {
            // Nothing is at the destination until push reaches it: holding push back makes the
            // guest's first accesses demand faults on any machine, however fast the push.
            cfg.push_delay = Duration::from_millis(100);
        }
        let (src, dest) = migrate(cfg);
        let r = src.unwrap_or_else(|e| panic!("{mode:?}/{workload}: source failed: {e:#}"));
        let d = dest.unwrap_or_else(|e| panic!("{mode:?}/{workload}: destination failed: {e:#}"));
        assert!(r.verified, "{mode:?}/{workload}: not verified: {:?}", d.verification);
        assert_eq!((r.page_faults, &r.dest.verification), (d.page_faults, &d.verification));
        assert!(r.bytes_transferred >= MEM * 9 / 10, "{mode:?}/{workload}: only {} bytes moved", r.bytes_transferred);
        match mode {
            Mode::Pre => assert_eq!(r.page_faults, 0),
            Mode::Post => assert!(r.page_faults > 0 && d.pages_after_resume > 0, "{mode:?}/{workload}: {d:?}"),
            Mode::Hybrid => {
                assert_eq!(r.rounds, 1, "{workload}: {r:?}");
                if workload != "idle" {
                    assert!(r.dirty_pages_at_stop > 0 && d.pages_after_resume > 0, "{workload}: {r:?}");
                }
            }
        }
    }

    #[test]
    fn every_mode_migrates_every_workload_and_verifies() {
        for w in ["idle", "memory", "cpu", "io"] {
            for m in [Mode::Pre, Mode::Post, Mode::Hybrid] {
                check(m, w);
            }
        }
    }

    #[test]
    fn hybrid_demand_faults_fetch_dirty_pages_before_push_starts() {
        // With push held back, the memory workload's hot set (which is what the full round left
        // dirty) can only arrive by demand: the guest must fault. Without the delay, a fast push can
        // legitimately deliver every dirty page before the guest touches one.
        let mut cfg = config(Mode::Hybrid, "memory");
        cfg.push_delay = Duration::from_millis(200);
        let (src, dest) = migrate(cfg);
        let r = src.expect("source");
        let d = dest.expect("dest");
        assert!(r.verified, "not verified: {:?}", d.verification);
        assert!(r.dirty_pages_at_stop > 0, "{r:?}");
        assert!(d.page_faults > 0 && d.guest_writes_after_resume > 0, "no demand fault: {d:?}");
        assert!(d.fault_latency_p50_us > 0.0, "{d:?}");
    }

    #[test]
    fn synchronous_write_protect_fallback_migrates() {
        let mut cfg = config(Mode::Pre, "memory");
        cfg.force_sync_wp = true;
        // A zero downtime target keeps iterating while anything is dirty, whatever the machine's speed.
        cfg.downtime_target = Duration::ZERO;
        let (src, dest) = migrate(cfg);
        let r = src.expect("source");
        assert!(dest.expect("dest").verification.is_some_and(|v| v.ok));
        assert_eq!(r.dirty_tracking, "uffd-wp-sync");
        assert!(r.rounds >= 2, "memory workload should need more than one round: {r:?}");
    }

    #[test]
    fn a_destination_that_vanishes_before_switch_over_leaves_the_guest_on_the_source() {
        // Accept the control connection, then drop everything mid-round.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let killer = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
            let _ = amvm_engine::memory::protocol::read_frame(&mut r);
            let mut w = s;
            let _ = amvm_engine::memory::protocol::write_frame(
                &mut w,
                amvm_engine::memory::protocol::Kind::HelloAck,
                0,
                0,
                &[],
            );
            std::thread::sleep(Duration::from_millis(50));
            drop(w);
            drop(r);
        });
        let mut cfg = config(Mode::Hybrid, "memory");
        cfg.mode = Mode::Pre; // pre-copy: one connection, cut during the first round
        cfg.bandwidth = Some(20e6);
        // Nobody is left to tell that the guest stays here: do not retry for long.
        cfg.recovery_timeout = Duration::from_millis(300);
        let err = run_source(&cfg, &addr, &|_| {}).expect_err("must fail");
        killer.join().expect("killer");
        match err {
            MemoryError::StayedOnSource { verified, .. } => {
                assert!(verified, "guest on the source lost writes")
            }
            e => panic!("unexpected error {e:#}"),
        }
    }

    #[test]
    fn a_refused_handshake_is_a_clear_error() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let opts = DestOptions { max_pages: 100, ..DestOptions::default() };
        let dest = std::thread::spawn(move || run_dest(&l, &opts));
        let err = run_source(&config(Mode::Post, "idle"), &addr, &|_| {}).expect_err("too big");
        let mut chain = err.to_string();
        let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&err);
        while let Some(c) = cause {
            chain.push_str(&format!(": {c}"));
            cause = c.source();
        }
        assert!(chain.contains("refusing"), "{chain}");
        assert!(dest.join().expect("dest").is_err());
    }
}
