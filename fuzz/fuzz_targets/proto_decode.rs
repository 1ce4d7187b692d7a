//! Fuzzes the monitoring frame decoder (`host/src/monitor/proto.rs`).
//!
//! Two paths per input: the raw bytes as a datagram (header checks, tag check), and the bytes
//! as the body of an authentic frame (sealed with the key), which reaches the body parser a
//! fuzzer could never reach through a valid HMAC. A decoded report must re-encode and decode
//! to the same samples.
#![no_main]

use libfuzzer_sys::fuzz_target;

// `proto.rs` refers to `super::metric`: both sit at the crate root here.
#[allow(dead_code)]
#[path = "../../host/src/monitor/metric.rs"]
mod metric;
#[allow(dead_code)]
#[path = "../../host/src/monitor/proto.rs"]
mod proto;

use proto::{decode, seal_raw, ClusterKey, Frame};

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::new(b"fuzz-cluster-key-0123456789".to_vec()).unwrap();
    let _ = decode(data, &key);
    let Some((&kind, body)) = data.split_first() else { return };
    let Ok(frame) = seal_raw(u16::from(kind % 4), body, &key) else { return };
    if let Ok(Frame::Report(r)) = decode(&frame, &key) {
        let frames = r.encode(&key).expect("a decoded report re-encodes");
        let mut host = Vec::new();
        let mut vm_samples = 0;
        for f in &frames {
            match decode(f, &key) {
                Ok(Frame::Report(d)) => {
                    host.extend(d.host_samples);
                    vm_samples += d.vms.iter().map(|v| v.samples.len()).sum::<usize>();
                }
                other => panic!("re-encoded frame does not decode: {other:?}"),
            }
        }
        assert_eq!(host, r.host_samples);
        assert_eq!(vm_samples, r.vms.iter().map(|v| v.samples.len()).sum::<usize>());
    }
});
