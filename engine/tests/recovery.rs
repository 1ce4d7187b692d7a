//! Fault injection: a TCP proxy between source and destination cuts every connection at a
//! chosen moment of the migration (mid-round, at the stop-copy, during the dirty-page phase),
//! optionally refuses new connections for a while, then forwards again. Every run must end
//! with the guest verified and running on exactly one side.

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use amvm_engine::memory::dest::{run_dest, DestOptions};
    use amvm_engine::memory::protocol::{self, Kind};
    use amvm_engine::memory::source::run_source;
    use amvm_engine::memory::workload::WorkloadSpec;
    use amvm_engine::memory::{DestStats, MemoryError, MigrationReport, Mode, SourceConfig};

    const MEM: u64 = 16 << 20;

    /// When the proxy cuts (once).
    #[derive(Clone, Copy)]
    enum Cut {
        /// After this many bytes source → destination on the control connection.
        AfterBytes(u64),
        /// When a frame of this kind goes source → destination on the control connection:
        /// `forward` it first or not, then wait `delay` before cutting.
        AtKind { kind: Kind, forward: bool, delay: Duration },
    }

    struct Proxy {
        addr: String,
        socks: Arc<Mutex<Vec<TcpStream>>>,
        cut_at: Arc<Mutex<Option<Instant>>>,
        cuts: Arc<AtomicU32>,
    }

    impl Proxy {
        /// Forwards to `target`; after the cut, connections are closed at once for `outage`;
        /// after each restored link it cuts again `again_after` later, `repeat` more times (a
        /// flapping link).
        fn start(target: String, rule: Cut, outage: Duration, repeat: u32, again_after: Duration) -> Self {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
            let addr = l.local_addr().expect("addr").to_string();
            let socks: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            let cut_at: Arc<Mutex<Option<Instant>>> = Arc::default();
            let cuts = Arc::new(AtomicU32::new(0));
            let fired = Arc::new(AtomicBool::new(false));
            let (s2, c2, n2) = (socks.clone(), cut_at.clone(), cuts.clone());
            std::thread::spawn(move || {
                let mut first = true;
                let mut repeat = repeat;
                let mut armed_for = None; // the cut a re-arm answers
                for inc in l.incoming() {
                    let Ok(inc) = inc else { continue };
                    let last_cut = *c2.lock().expect("lock");
                    if last_cut.is_some_and(|t: Instant| t.elapsed() < outage) {
                        drop(inc); // the link is still down
                        continue;
                    }
                    if repeat > 0 && last_cut.is_some() && armed_for != last_cut {
                        // The link is back: cut it again a little later.
                        repeat -= 1;
                        armed_for = last_cut;
                        let (s, c, n) = (s2.clone(), c2.clone(), n2.clone());
                        std::thread::spawn(move || {
                            std::thread::sleep(again_after);
                            *c.lock().expect("lock") = Some(Instant::now());
                            n.fetch_add(1, Ordering::SeqCst);
                            for x in s.lock().expect("lock").drain(..) {
                                let _ = x.shutdown(Shutdown::Both);
                            }
                        });
                    }
                    let Ok(out) = TcpStream::connect(&target) else { continue };
                    let _ = (inc.set_nodelay(true), out.set_nodelay(true));
                    {
                        let mut g = s2.lock().expect("lock");
                        g.push(inc.try_clone().expect("clone"));
                        g.push(out.try_clone().expect("clone"));
                    }
                    let cut = {
                        let (s, c, n) = (s2.clone(), c2.clone(), n2.clone());
                        move || {
                            *c.lock().expect("lock") = Some(Instant::now());
                            n.fetch_add(1, Ordering::SeqCst);
                            for x in s.lock().expect("lock").drain(..) {
                                let _ = x.shutdown(Shutdown::Both);
                            }
                        }
                    };
                    let (i2, o2) = (inc.try_clone().expect("clone"), out.try_clone().expect("clone"));
                    // Destination → source: raw bytes.
                    std::thread::spawn(move || pump(o2, i2));
                    if first {
                        // The first connection is the control connection: watch its frames.
                        first = false;
                        let fired = fired.clone();
                        std::thread::spawn(move || control_pump(inc, out, rule, &fired, cut));
                    } else {
                        std::thread::spawn(move || pump(inc, out));
                    }
                }
            });
            Self { addr, socks, cut_at, cuts }
        }

        fn cuts(&self) -> u32 {
            self.cuts.load(Ordering::SeqCst)
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            for x in self.socks.lock().expect("lock").drain(..) {
                let _ = x.shutdown(Shutdown::Both);
            }
            let _ = self.cut_at.lock().map(|mut g| *g = Some(Instant::now()));
        }
    }

    fn pump(mut from: TcpStream, mut to: TcpStream) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = (from.shutdown(Shutdown::Both), to.shutdown(Shutdown::Both));
    }

    fn control_pump(
        from: TcpStream,
        mut to: TcpStream,
        rule: Cut,
        fired: &AtomicBool,
        cut: impl FnOnce() + Send + 'static,
    ) {
        let mut rx = BufReader::new(from.try_clone().expect("clone"));
        let mut sent = 0u64;
        let mut cut = Some(cut);
        while let Ok((h, payload)) = protocol::read_frame(&mut rx) {
            let hit = !fired.load(Ordering::SeqCst)
                && match rule {
                    Cut::AfterBytes(n) => sent >= n,
                    Cut::AtKind { kind, .. } => h.kind == kind,
                };
            let forward = !hit || matches!(rule, Cut::AtKind { forward: true, .. });
            if forward && protocol::write_frame(&mut to, h.kind, h.flags, h.arg, &payload).is_err() {
                break;
            }
            sent += 16 + payload.len() as u64;
            if hit {
                fired.store(true, Ordering::SeqCst);
                let delay = if let Cut::AtKind { delay, .. } = rule { delay } else { Duration::ZERO };
                if let Some(c) = cut.take() {
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        c();
                    });
                }
                if !forward {
                    break;
                }
            }
        }
        let _ = (from.shutdown(Shutdown::Both), to.shutdown(Shutdown::Both));
    }

    fn config(mode: Mode) -> SourceConfig {
        let mut spec = WorkloadSpec::preset("memory").expect("preset");
        // Debug builds write pages ~20x slower than release: keep rates the test machine sustains.
        spec.writes_per_s = 4_000.0;
        spec.reads_per_s = 4_000.0;
        spec.spin = false;
        let mut cfg = SourceConfig::new(mode, MEM, spec);
        cfg.warmup = Duration::from_millis(100);
        cfg.bandwidth = Some(100e6);
        cfg.max_rounds = 4;
        cfg.recovery_timeout = Duration::from_secs(10);
        cfg
    }

    type Outcome = (Result<MigrationReport, MemoryError>, Result<DestStats, MemoryError>, u32);

    fn migrate_through(cfg: SourceConfig, rule: Cut, outage: Duration, dest_recovery: Duration) -> Outcome {
        migrate_flapping(cfg, rule, outage, dest_recovery, 0)
    }

    fn migrate_flapping(
        cfg: SourceConfig,
        rule: Cut,
        outage: Duration,
        dest_recovery: Duration,
        repeat: u32,
    ) -> Outcome {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = l.local_addr().expect("addr").to_string();
        let opts = DestOptions {
            run_after: Duration::from_millis(50),
            recovery_timeout: dest_recovery,
            ..DestOptions::default()
        };
        let dest = std::thread::spawn(move || run_dest(&l, &opts));
        let proxy = Proxy::start(target, rule, outage, repeat, Duration::from_millis(60));
        let src = run_source(&cfg, &proxy.addr, &|_| {});
        let d = dest.join().expect("dest thread");
        (src, d, proxy.cuts())
    }

    fn chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut c = e.source();
        while let Some(x) = c {
            s.push_str(&format!(": {x}"));
            c = x.source();
        }
        s
    }

    /// The guest ended at the destination, complete and verified; the source did not keep it.
    fn assert_at_destination(o: Outcome, what: &str) -> (MigrationReport, DestStats) {
        let (src, dest, cuts) = o;
        assert!(cuts >= 1, "{what}: the proxy did not cut");
        let r = src.unwrap_or_else(|e| panic!("{what}: source failed: {}", chain(&e)));
        let d = dest.unwrap_or_else(|e| panic!("{what}: destination failed: {}", chain(&e)));
        assert!(r.verified && d.verification.as_ref().is_some_and(|v| v.ok), "{what}: not verified: {d:?}");
        assert!(r.link_recoveries >= 1, "{what}: no recovery counted: {r:?}");
        (r, d)
    }

    /// The guest stayed on the source (verified there); the destination never ran it.
    fn assert_on_source(o: Outcome, what: &str) {
        let (src, dest, cuts) = o;
        assert_eq!(cuts, 1, "{what}: the proxy did not cut");
        match src {
            Err(MemoryError::StayedOnSource { verified, .. }) => assert!(verified, "{what}: source guest lost writes"),
            Err(e) => panic!("{what}: unexpected source error {}", chain(&e)),
            Ok(r) => panic!("{what}: migration claims success: {r:?}"),
        }
        let e = dest.expect_err("the destination must not finish");
        assert!(chain(&e).contains("stays on the source"), "{what}: {}", chain(&e));
    }

    #[test]
    fn a_cut_during_the_full_round_leaves_the_guest_on_the_source() {
        for mode in [Mode::Hybrid, Mode::Pre] {
            let t = Instant::now();
            let o = migrate_through(config(mode), Cut::AfterBytes(MEM / 3), Duration::ZERO, Duration::from_secs(10));
            assert_on_source(o, &format!("{mode:?} mid-round"));
            // The source tells the waiting destination at once; neither waits for its timeout.
            assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
        }
    }

    #[test]
    fn a_stop_copy_that_never_arrives_leaves_the_guest_on_the_source() {
        // The source's write of the stop-copy succeeds (into the proxy) but the destination never
        // sees it: only the destination's `Status(0)` on reconnection lets the source restart the guest.
        let rule = Cut::AtKind { kind: Kind::StopCopy, forward: false, delay: Duration::ZERO };
        let o = migrate_through(config(Mode::Hybrid), rule, Duration::from_millis(100), Duration::from_secs(10));
        assert_on_source(o, "hybrid stop-copy lost");
    }

    #[test]
    fn a_cut_just_after_the_stop_copy_completes_at_the_destination() {
        for mode in [Mode::Pre, Mode::Hybrid, Mode::Post] {
            let rule = Cut::AtKind { kind: Kind::StopCopy, forward: true, delay: Duration::ZERO };
            let o = migrate_through(config(mode), rule, Duration::from_millis(100), Duration::from_secs(10));
            assert_at_destination(o, &format!("{mode:?} just after stop-copy"));
        }
    }

    #[test]
    fn a_cut_in_the_dirty_page_phase_pauses_then_resumes_and_verifies() {
        for mode in [Mode::Hybrid, Mode::Post] {
            let mut cfg = config(mode);
            // Pure demand for the first 400 ms after resume, so pages are surely missing at the cut.
            cfg.push_delay = Duration::from_millis(400);
            let outage = Duration::from_millis(300);
            let rule = Cut::AtKind { kind: Kind::StopCopy, forward: true, delay: Duration::from_millis(150) };
            let (r, d) = assert_at_destination(
                migrate_through(cfg, rule, outage, Duration::from_secs(10)),
                &format!("{mode:?}"),
            );
            // Pages were still missing when the link went down, so completion came after the outage.
            assert!(d.resume_to_complete_ms > 150.0 + 300.0, "{mode:?}: completed before the outage ended: {d:?}");
            assert!(d.page_faults > 0 && d.pages_after_resume > 0, "{mode:?}: {d:?}");
            assert!(r.dirty_pages_at_stop > 0, "{mode:?}: {r:?}");
        }
    }

    #[test]
    fn a_cut_while_two_streams_push_resumes_with_only_the_missing_pages() {
        // Post-copy at 40 MB/s: the push of 16 MiB takes ~400 ms; the cut lands in the middle.
        let mut cfg = config(Mode::Post);
        cfg.bandwidth = Some(40e6);
        cfg.push_streams = 2;
        let rule = Cut::AtKind { kind: Kind::StopCopy, forward: true, delay: Duration::from_millis(150) };
        let (r, d) = assert_at_destination(
            migrate_through(cfg, rule, Duration::from_millis(100), Duration::from_secs(10)),
            "post push",
        );
        // Pages that arrived before the cut are not sent again: well under two copies moved.
        assert!(r.bytes_transferred < MEM * 3 / 2, "{r:?}");
        assert!(d.pages_after_resume == MEM / 4096, "every page installed exactly once: {d:?}");
    }

    #[test]
    fn a_flapping_link_in_the_post_copy_phase_still_completes() {
        // Cut 150 ms into the dirty-page phase, then twice more, each 60 ms after the link came
        // back. Post-copy: all 16 MiB must cross a 40 MB/s link after resume, so every cut lands
        // while pages are missing.
        let mut cfg = config(Mode::Post);
        cfg.bandwidth = Some(40e6);
        cfg.push_delay = Duration::from_millis(400);
        let rule = Cut::AtKind { kind: Kind::StopCopy, forward: true, delay: Duration::from_millis(150) };
        let o = migrate_flapping(cfg, rule, Duration::from_millis(80), Duration::from_secs(10), 2);
        let cuts = o.2;
        let (r, d) = assert_at_destination(o, "post flapping");
        assert_eq!(cuts, 3, "{r:?}");
        assert!(r.link_recoveries >= 2, "{r:?}");
        assert!(d.page_faults > 0, "{d:?}");
    }

    #[test]
    fn a_link_that_never_returns_fails_clearly_and_runs_the_guest_nowhere_twice() {
        let mut cfg = config(Mode::Hybrid);
        cfg.push_delay = Duration::from_millis(2_000);
        cfg.recovery_timeout = Duration::from_millis(800);
        let rule = Cut::AtKind { kind: Kind::StopCopy, forward: true, delay: Duration::from_millis(150) };
        let (src, dest, cuts) = migrate_through(cfg, rule, Duration::from_secs(3600), Duration::from_millis(800));
        assert_eq!(cuts, 1);
        match src {
            Err(e @ MemoryError::RecoveryFailed { .. }) => {
                assert!(chain(&e).contains("does not restart the guest"), "{}", chain(&e))
            }
            Err(e) => panic!("unexpected source error {}", chain(&e)),
            Ok(r) => panic!("source claims success: {r:?}"),
        }
        match dest {
            Err(e @ MemoryError::RecoveryFailed { .. }) => {
                assert!(chain(&e).contains("paused at the destination"), "{}", chain(&e))
            }
            Err(e) => panic!("unexpected destination error {}", chain(&e)),
            Ok(d) => panic!("destination claims success without all its memory: {d:?}"),
        }
    }
}
