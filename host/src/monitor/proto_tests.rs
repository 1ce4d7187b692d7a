use proptest::prelude::*;

use super::*;

fn key() -> ClusterKey {
    ClusterKey::new(b"0123456789abcdef-test-key".to_vec()).unwrap()
}

fn host_metrics() -> Vec<Metric> {
    Metric::ALL.iter().copied().filter(|m| m.scope() == Scope::Host).collect()
}

fn vm_metrics() -> Vec<Metric> {
    Metric::ALL.iter().copied().filter(|m| m.scope() == Scope::Vm).collect()
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,63}"
}

fn value() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![Just(None), (-1e15f64..1e15).prop_map(Some), any::<u32>().prop_map(|v| Some(v as f64))]
}

fn sample(metrics: Vec<Metric>) -> impl Strategy<Value = Sample> {
    (proptest::sample::select(metrics), value())
}

prop_compose! {
    fn vm()(uuid in any::<[u8; 16]>(), name in "[ -~]{0,40}",
            samples in proptest::collection::vec(sample(vm_metrics()), 0..30)) -> VmReport {
        VmReport { uuid, name, samples }
    }
}

prop_compose! {
    fn report(max_vms: usize)(cluster in name(), host in name(), node in any::<[u8; 16]>(),
              boot in any::<[u8; 16]>(), seq in any::<u32>(), time_ms in any::<u64>(),
              interval_ms in any::<u32>(), os_name in "[ -~]{0,60}",
              host_samples in proptest::collection::vec(sample(host_metrics()), 0..40),
              vms in proptest::collection::vec(vm(), 0..max_vms)) -> Report {
        Report { cluster, host, node, boot, seq: seq as u64, time_ms, interval_ms, os_name,
                 host_samples, vms, skipped: 0 }
    }
}

/// Decodes every frame and merges them back into one report (the collector sees them apart).
fn reassemble(frames: &[Vec<u8>], k: &ClusterKey) -> Report {
    let mut merged: Option<Report> = None;
    for (i, f) in frames.iter().enumerate() {
        assert!(f.len() <= HEADER_LEN + MAX_BODY + TAG_LEN);
        let Frame::Report(r) = decode(f, k).unwrap() else { panic!("not a report") };
        match &mut merged {
            None => merged = Some(r),
            Some(m) => {
                assert_eq!(r.seq, m.seq + i as u64);
                assert!(r.host_samples.is_empty());
                for vm in r.vms {
                    match m.vms.last_mut() {
                        Some(last) if last.uuid == vm.uuid && last.name == vm.name => last.samples.extend(vm.samples),
                        _ => m.vms.push(vm),
                    }
                }
            }
        }
    }
    merged.unwrap()
}

/// Merges consecutive VM blocks of the same VM, as the encoder may split one VM.
fn normalize(mut r: Report) -> Report {
    let mut vms: Vec<VmReport> = Vec::new();
    for vm in r.vms {
        match vms.last_mut() {
            Some(last) if last.uuid == vm.uuid && last.name == vm.name => last.samples.extend(vm.samples),
            _ => vms.push(vm),
        }
    }
    r.vms = vms;
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(r in report(6)) {
        let k = key();
        let frames = r.encode(&k).unwrap();
        prop_assert_eq!(normalize(reassemble(&frames, &k)), normalize(r));
    }

    #[test]
    fn large_reports_split_into_bounded_frames(r in report(200)) {
        let k = key();
        let frames = r.encode(&k).unwrap();
        prop_assert_eq!(normalize(reassemble(&frames, &k)), normalize(r));
    }

    #[test]
    fn any_bit_flip_is_rejected(r in report(3), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let k = key();
        let mut f = r.encode(&k).unwrap().remove(0);
        let i = pos.index(f.len());
        f[i] ^= 1 << bit;
        prop_assert!(decode(&f, &k).is_err());
    }

    #[test]
    fn truncation_and_extension_are_rejected(r in report(3), cut in any::<prop::sample::Index>()) {
        let k = key();
        let f = r.encode(&k).unwrap().remove(0);
        let n = cut.index(f.len());
        prop_assert!(decode(&f[..n], &k).is_err());
        let mut longer = f.clone();
        longer.push(0);
        prop_assert!(decode(&longer, &k).is_err());
    }

    #[test]
    fn wrong_key_is_rejected(r in report(2)) {
        let f = r.encode(&key()).unwrap().remove(0);
        let other = ClusterKey::new(b"another-cluster-key!".to_vec()).unwrap();
        prop_assert_eq!(decode(&f, &other), Err(ProtoError::Tag));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes, &key());
    }

    /// Authentic frames with garbage bodies (a buggy or future agent): errors, never panics.
    #[test]
    fn authentic_garbage_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), kind in 0u16..4) {
        let k = key();
        let f = seal_raw(kind, &body, &k).unwrap();
        let _ = decode(&f, &k);
    }
}

fn sample_report() -> Report {
    Report {
        cluster: "c1".into(),
        host: "node-1".into(),
        node: [1; 16],
        boot: [2; 16],
        seq: 7,
        time_ms: 1_700_000_000_000,
        interval_ms: 15_000,
        os_name: "Linux 6.18".into(),
        host_samples: vec![(Metric::CpuIdle, Some(93.5)), (Metric::MemFree, None)],
        vms: vec![VmReport { uuid: [3; 16], name: "vm".into(), samples: vec![(Metric::VcpuUtil, Some(12.0))] }],
        skipped: 0,
    }
}

/// Re-seals a modified frame body so only the decoder's body checks can reject it.
fn reseal(frame: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut body = frame[HEADER_LEN..frame.len() - TAG_LEN].to_vec();
    edit(&mut body);
    seal(FrameKind::Report, &body, &key()).unwrap()
}

#[test]
fn non_finite_values_decode_as_unknown() {
    let mut r = sample_report();
    r.host_samples = vec![(Metric::CpuIdle, Some(f64::NAN)), (Metric::CpuUser, Some(f64::INFINITY))];
    let f = r.encode(&key()).unwrap().remove(0);
    let Frame::Report(d) = decode(&f, &key()).unwrap() else { panic!() };
    assert_eq!(d.host_samples, vec![(Metric::CpuIdle, None), (Metric::CpuUser, None)]);
}

#[test]
fn unknown_records_and_metric_ids_are_skipped() {
    let f = sample_report().encode(&key()).unwrap().remove(0);
    let f = reseal(&f, |b| {
        b.extend_from_slice(&[99, 0, 3, 1, 2, 3]); // unknown record type 99, 3 bytes
        b.extend_from_slice(&[REC_HOST, 0, 10, 0x7f, 0x00]); // unknown metric id 0x7f00
        b.extend_from_slice(&1.0f64.to_be_bytes());
        b.extend_from_slice(&[REC_HOST, 0, 10, 0, Metric::VcpuNum as u8]); // VM metric in host record
        b.extend_from_slice(&1.0f64.to_be_bytes());
    });
    let Frame::Report(d) = decode(&f, &key()).unwrap() else { panic!() };
    assert_eq!(d.skipped, 3);
    assert_eq!(d.host_samples, sample_report().host_samples);
    assert_eq!(d.vms, sample_report().vms);
}

#[test]
fn bad_bodies_get_clear_errors() {
    let f = sample_report().encode(&key()).unwrap().remove(0);
    let check = |edit: &dyn Fn(&mut Vec<u8>), want: ProtoError| {
        let g = reseal(&f, |b| edit(b));
        assert_eq!(decode(&g, &key()), Err(want));
    };
    // Host name "node-1" → "../..." (path traversal) is refused.
    check(&|b| b[4..7].copy_from_slice(b"../"), ProtoError::Invalid("host name"));
    check(&|b| b.extend_from_slice(&[REC_HOST, 0xff, 0xff]), ProtoError::Truncated("record payload"));
    check(&|b| b.extend_from_slice(&[REC_HOST, 0, 2, 0, 1]), ProtoError::Truncated("sample value"));
    check(&|b| b.truncate(10), ProtoError::Truncated("node uuid"));
    let mut v2 = f.clone();
    v2[4] = 2;
    assert_eq!(decode(&v2, &key()), Err(ProtoError::Version(2)));
    assert_eq!(decode(b"AMVM", &key()), Err(ProtoError::Short(4)));
    let mut m = f.clone();
    m[0] = b'X';
    assert_eq!(decode(&m, &key()), Err(ProtoError::Magic));
}

#[test]
fn ack_round_trips_and_short_keys_are_refused() {
    let a = Ack { node: [9; 16], boot: [8; 16], seq: 42 };
    assert_eq!(decode(&a.encode(&key()), &key()), Ok(Frame::Ack(a)));
    assert!(ClusterKey::new(b"short".to_vec()).is_err());
    assert!(format!("{:?}", key()).contains("redacted"));
}

#[test]
fn invalid_names_are_refused_by_the_encoder() {
    let mut r = sample_report();
    r.host = "a/b".into();
    assert_eq!(r.encode(&key()), Err(ProtoError::Invalid("host name")));
    for bad in ["", ".", "..", ".hidden", "a b", "x/y", &"a".repeat(65)] {
        assert!(!valid_name(bad), "{bad:?}");
    }
    assert!(valid_name("node-01.example_com"));
}

#[test]
fn uuid_text_round_trips() {
    let u = [0xab; 16];
    let s = uuid_string(&u);
    assert_eq!(s.len(), 36);
    assert_eq!(parse_uuid(&s), Some(u));
    assert_eq!(parse_uuid("zz"), None);
}
