//! Floods a real collector with malformed and forged frames while a real agent reports: every
//! good report is stored, every bad frame is rejected, the collector stays up.

mod monitor_util;

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::Duration;

    use super::monitor_util::{rrdtool_fetch, run_agent, CollectorProc};
    use amvm_host::monitor::metric::Metric;
    use amvm_host::monitor::proto::{ClusterKey, Report};
    use rand::{Rng, SeedableRng};

    fn forged_report(i: u64) -> Report {
        Report {
            cluster: "flood".into(),
            host: "node-good".into(), // impersonates the good agent
            node: [0x42; 16],
            boot: [i as u8; 16],
            seq: i,
            time_ms: 4_000_000_000_000,
            interval_ms: 1000,
            os_name: "evil".into(),
            host_samples: vec![(Metric::MemTotal, Some(1.0))],
            vms: Vec::new(),
            skipped: 0,
        }
    }

    /// One bad datagram of a rotating kind.
    fn bad_frame(i: u64, rng: &mut rand_chacha::ChaCha8Rng, wrong: &ClusterKey) -> Vec<u8> {
        let forged = forged_report(i).encode(wrong).unwrap().remove(0);
        match i % 6 {
            0 => (0..rng.random_range(0..1500)).map(|_| rng.random()).collect(), // noise
            1 => forged,                                                         // wrong key
            2 => forged[..rng.random_range(0..forged.len())].to_vec(),           // truncated
            3 => {
                let mut f = forged;
                f[8] = 0xff; // length field lies
                f[9] = 0xff;
                f
            }
            4 => {
                let mut f = forged;
                f[4] = 99; // future version
                f
            }
            _ => {
                let mut f = b"AMVM".to_vec(); // header only, huge declared length
                f.extend_from_slice(&[1, 0, 0, 1, 0xff, 0xff]);
                f
            }
        }
    }

    #[test]
    fn flood_of_bad_frames_loses_no_good_sample() {
        let dir = tempfile::tempdir().unwrap();
        let collector = CollectorProc::start(dir.path(), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let flooders: Vec<_> = (0..2u64)
            .map(|t| {
                let (stop, sent, addr) = (stop.clone(), sent.clone(), collector.addr.clone());
                std::thread::spawn(move || {
                    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                    let wrong = ClusterKey::new(b"not-the-cluster-key!!".to_vec()).unwrap();
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(t);
                    let mut i = t;
                    while !stop.load(Relaxed) {
                        let _ = sock.send_to(&bad_frame(i, &mut rng, &wrong), &addr);
                        sent.fetch_add(1, Relaxed);
                        i += 2;
                        if i % 64 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect();

        let reports = 8;
        run_agent(
            &collector.addr,
            &["--interval", "0.5", "--cluster", "flood", "--name", "node-good", "--libvirt", "none", "--count", "8"],
        );
        stop.store(true, Relaxed);
        for f in flooders {
            f.join().unwrap();
        }
        let bad = sent.load(Relaxed);
        // Datagrams the kernel dropped while the socket buffer was full never reach the collector;
        // the good agent's lost frames are healed by its ACK/resend.
        let s = collector.wait_stats("good samples written", |s| {
            s["samples_written"] == s["samples_received"] && s["frames_ok"] == reports
        });
        let rejected = s["frames_rejected_auth"].as_u64().unwrap() + s["frames_rejected_malformed"].as_u64().unwrap();
        eprintln!("flood: {bad} bad frames sent, {rejected} reached the collector and were rejected; stats {s}");
        assert!(rejected > 1000, "too few bad frames reached the collector ({rejected})");
        assert!(bad > 1000, "the flood was too small to mean anything ({bad})");
        assert_eq!(s["frames_ok"], reports, "every good report arrived exactly once");
        assert!(s["frames_rejected_auth"].as_u64().unwrap() > 0);
        assert!(s["frames_rejected_malformed"].as_u64().unwrap() > 0);
        assert_eq!(s["write_errors"], 0);

        // Every good report reached the disk; no forged value did.
        let mem = rrdtool_fetch(&dir.path().join("rrds/flood/node-good/mem_total.rrd"), 60);
        assert!(!mem.is_empty(), "no good samples stored");
        assert!(mem.iter().all(|v| *v > 1.0), "a forged value was stored: {mem:?}");
        // The collector is still up and still serving.
        let mut c = collector;
        assert!(c.child.try_wait().unwrap().is_none(), "collector died");
        run_agent(
            &c.addr,
            &["--interval", "0.2", "--cluster", "flood", "--name", "node-good", "--libvirt", "none", "--count", "2"],
        );
        c.wait_stats("two more reports", |s| s["frames_ok"] == reports + 2);

        // SIGTERM stops it cleanly after writing what is pending.
        let pid = c.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = c.child.wait().unwrap();
        assert!(status.success(), "collector exit status {status:?}");
    }
}
