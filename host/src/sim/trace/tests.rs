use std::path::Path;

use super::*;

fn day_dir(files: &[(&str, String)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let day = root.path().join("20990101");
    std::fs::create_dir(&day).expect("mkdir");
    for (name, body) in files {
        std::fs::write(day.join(name), body).expect("write");
    }
    root
}

fn good() -> String {
    (0..288).map(|i| format!("{}\n", i % 100)).collect()
}

fn load_day(root: &tempfile::TempDir) -> Result<Trace> {
    Trace::load(root.path().join("20990101").to_str().expect("utf8"))
}

#[test]
fn embedded_day_is_complete_and_in_cloudsim_order() {
    let t = Trace::embedded().expect("embedded");
    assert_eq!(t.vms.len(), 1052);
    assert_eq!(t.samples(), 288);
    assert_eq!(t.vms[0].name, "planetlab3_cs_st-andrews_ac_uk_upmc_ts");
    assert_eq!(t.vms[0].vm_type, Some(0));
    assert_eq!(t.vms[1051].vm_type, Some(3));
    assert!(t.vms.iter().any(|v| v.name.contains(' ')), "names with spaces survive embedding");
    // SUMMARY.csv: mean 12.31 %
    let mean = t.vms.iter().flat_map(|v| v.util.iter()).sum::<f64>() / (1052.0 * 288.0);
    assert!((mean - 0.1231).abs() < 0.0001, "{mean}");
}

#[test]
fn directory_with_spaces_in_names_loads_in_byte_order() {
    let root = day_dir(&[("b vm", good()), ("a", good())]);
    let t = load_day(&root).expect("load");
    assert_eq!(t.vms.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["a", "b vm"]);
    assert_eq!(t.order, "file name");
    assert_eq!(t.vms[0].util[5], 0.05);
}

#[test]
fn bad_files_name_the_file_and_line() {
    let check = |body: String, needle: &str| {
        let root = day_dir(&[("ok", good()), ("bad one", body)]);
        let e = load_day(&root).expect_err("must fail").to_string();
        assert!(e.contains("bad one") && e.contains(needle), "{e}");
    };
    check(String::new(), "is empty");
    check(good().replacen("2\n", "two\n", 1), ":3: not a number");
    check(good().replacen("2\n", "101\n", 1), ":3: CPU utilization 101");
    check(good().replacen("2\n", "-1\n", 1), "outside");
    check((0..100).map(|_| "5\n").collect(), "has 100 samples, expected 288");
}

#[test]
fn missing_or_empty_directories_are_errors() {
    let e = Trace::load("/nonexistent/amvm/20110303").expect_err("missing").to_string();
    assert!(e.contains("/nonexistent/amvm/20110303") && e.contains("does not exist"), "{e}");
    let root = day_dir(&[]);
    assert!(matches!(load_day(&root), Err(SimError::NoTraces(_))));
}

#[test]
fn vm_order_file_sets_order_and_types_and_must_match() {
    let root = day_dir(&[("x", good()), ("y y", good())]);
    let order_dir = root.path().join("vm-order");
    std::fs::create_dir(&order_dir).expect("mkdir");
    std::fs::write(order_dir.join("20990101.tsv"), "0\t0\t2500\ty y\n1\t3\t500\tx\n").expect("write");
    let t = load_day(&root).expect("load");
    assert_eq!((t.vms[0].name.as_str(), t.vms[0].vm_type), ("y y", Some(0)));
    assert_eq!((t.vms[1].name.as_str(), t.vms[1].vm_type), ("x", Some(3)));
    std::fs::write(order_dir.join("20990101.tsv"), "0\t0\t2500\tz\n").expect("write");
    let e = load_day(&root).expect_err("mismatch").to_string();
    assert!(e.contains("20990101.tsv") && e.contains("\"z\""), "{e}");
}

#[test]
fn csv_and_json_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("export.csv");
    std::fs::write(&csv, "vm,time_s,cpu_pct\na,0,10\nb,0,20\na,60,30\nb,60,40.5\n").expect("write");
    let t = Trace::load(csv.to_str().expect("utf8")).expect("csv");
    assert_eq!(t.interval_s, 60.0);
    assert_eq!(t.vms[1].util, vec![0.2, 0.405]);
    std::fs::write(&csv, "vm,time_s,cpu_pct\na,0,10\na,60,x\n").expect("write");
    let e = Trace::load(csv.to_str().expect("utf8")).expect_err("bad").to_string();
    assert!(e.contains("export.csv:3"), "{e}");

    let json = dir.path().join("export.json");
    std::fs::write(&json, r#"{"interval_s": 120, "vms": [{"name": "a", "cpu_pct": [1, 2, 3]}]}"#).expect("write");
    let t = Trace::load(json.to_str().expect("utf8")).expect("json");
    assert_eq!((t.interval_s, t.vms[0].util.len()), (120.0, 3));
    std::fs::write(&json, r#"{"interval_s": 120, "vms": [{"name": "a", "cpu_pct": [1, 200]}]}"#).expect("write");
    let e = Trace::load(json.to_str().expect("utf8")).expect_err("bad").to_string();
    assert!(e.contains("export.json") && e.contains("200"), "{e}");
}

#[test]
fn synthetic_is_seeded() {
    let a = Trace::load("synthetic:vms=20,samples=50,seed=3").expect("a");
    let b = Trace::load("synthetic:vms=20,samples=50,seed=3").expect("b");
    let c = Trace::load("synthetic:vms=20,samples=50,seed=4").expect("c");
    assert_eq!(a.vms[7].util, b.vms[7].util);
    assert_ne!(a.vms[7].util, c.vms[7].util);
    assert!(a.vms.iter().flat_map(|v| &v.util).all(|u| (0.0..=0.99).contains(u)));
    assert!(Trace::load("synthetic:vms=0").is_err());
    assert!(Trace::load("synthetic:colour=red").is_err());
}

#[test]
fn utilization_interpolates_like_cloudsim() {
    let t = Trace {
        name: "t".into(),
        source: "t".into(),
        interval_s: 300.0,
        vms: vec![VmTrace { name: "v".into(), util: vec![0.1, 0.4, 0.2], vm_type: None }],
        order: "file",
    };
    assert_eq!(t.utilization(0, 300.0), 0.4);
    assert!((t.utilization(0, 400.0) - (0.4 - 0.2 / 3.0)).abs() < 1e-12);
    assert_eq!(t.utilization(0, 600.0), 0.2);
    assert_eq!(t.utilization(0, 5000.0), 0.2);
}

#[test]
fn relative_shared_paths_resolve_from_the_repository() {
    // `../shared/...` is relative to the repository root, whatever the working directory.
    let p = resolve_path(Path::new("host/Cargo.toml"));
    assert!(p.exists(), "{}", p.display());
}
