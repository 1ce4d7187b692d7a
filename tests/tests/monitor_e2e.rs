//! A real agent reports to a real collector at a 1 s interval; the RRD files appear in the
//! documented layout and the stock `rrdtool` reads the values back. VM metrics come from the
//! libvirt daemon's test driver (`test+unix:///default`, started by scripts/services.sh).

mod monitor_util;

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::monitor_util::{rrdtool_fetch, run_agent, CollectorProc};

    const TEST_VM: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    fn meminfo_total_bytes() -> f64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() * 1024.0
    }

    fn libvirt_uri() -> &'static str {
        // The daemon is the real thing; the in-process test driver is the fallback when no daemon runs.
        let daemon = Command::new("virsh").args(["-c", "test+unix:///default", "list"]).output();
        match daemon {
            Ok(o) if o.status.success() => "test+unix:///default",
            _ => {
                eprintln!(
                    "SKIP daemon: libvirtd not reachable (run scripts/services.sh); using test:///default in-process"
                );
                "test:///default"
            }
        }
    }

    #[test]
    fn agent_to_collector_to_rrdtool() {
        let dir = tempfile::tempdir().unwrap();
        let collector = CollectorProc::start(dir.path(), &[]);
        run_agent(
            &collector.addr,
            &["--interval", "1", "--cluster", "e2e", "--name", "node-a", "--libvirt", libvirt_uri(), "--count", "6"],
        );
        collector
            .wait_stats("6 reports written", |s| s["frames_ok"] == 6 && s["samples_written"] == s["samples_received"]);

        let host = dir.path().join("rrds/e2e/node-a");
        let vm = dir.path().join("rrds/e2e/vms").join(TEST_VM);
        for m in [
            "heartbeat",
            "load_one",
            "cpu_user",
            "cpu_idle",
            "mem_total",
            "mem_free",
            "disk_total",
            "proc_total",
            "cpu_num",
        ] {
            assert!(host.join(format!("{m}.rrd")).exists(), "missing {m}.rrd");
        }
        for m in ["vcpu_num", "vcpu_util", "vmem_total", "vbytes_in", "vm_node"] {
            assert!(vm.join(format!("{m}.rrd")).exists(), "missing VM {m}.rrd");
        }
        // Where the VM ran: node-a's number in the cluster's nodes.json.
        let nodes: Vec<String> =
            serde_json::from_slice(&std::fs::read(dir.path().join("rrds/e2e/nodes.json")).unwrap()).unwrap();
        assert_eq!(nodes, ["node-a"]);
        assert!(rrdtool_fetch(&vm.join("vm_node.rrd"), 60).iter().all(|&n| (n - 1.0).abs() < 1e-9));
        assert!(!rrdtool_fetch(&vm.join("vm_node.rrd"), 60).is_empty());

        let mem = rrdtool_fetch(&host.join("mem_total.rrd"), 60);
        assert!(!mem.is_empty(), "no mem_total values");
        assert!(mem.iter().all(|v| (*v - meminfo_total_bytes()).abs() < 1.0), "{mem:?}");
        let cpus = rrdtool_fetch(&host.join("cpu_num.rrd"), 60);
        let nproc = std::thread::available_parallelism().unwrap().get() as f64;
        assert!(!cpus.is_empty() && cpus.iter().all(|v| *v >= nproc), "{cpus:?}");
        let idle = rrdtool_fetch(&host.join("cpu_idle.rrd"), 60);
        assert!(!idle.is_empty() && idle.iter().all(|v| (0.0..=100.0).contains(v)), "{idle:?}");
        let vcpus = rrdtool_fetch(&vm.join("vcpu_num.rrd"), 60);
        assert!(!vcpus.is_empty() && vcpus.iter().all(|v| *v == 2.0), "{vcpus:?}");
        let vmem = rrdtool_fetch(&vm.join("vmem_total.rrd"), 60);
        assert!(!vmem.is_empty() && vmem.iter().all(|v| *v > 0.0), "{vmem:?}");

        // Our reader agrees with the stock tool.
        let bin = amvm_tests::amvm_bin();
        let out = Command::new(&bin)
            .args(["metrics", "fetch", "--data"])
            .arg(dir.path())
            .args(["--cluster", "e2e", "--host", "node-a", "--metric", "mem_total", "--since", "60s", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let known: Vec<f64> = j["points"].as_array().unwrap().iter().filter_map(|p| p[1].as_f64()).collect();
        assert!(!known.is_empty() && known.iter().all(|v| (*v - meminfo_total_bytes()).abs() < 1.0));

        let png = dir.path().join("vm.png");
        let out = Command::new(&bin)
            .args(["metrics", "graph", "--data"])
            .arg(dir.path())
            .args(["--cluster", "e2e", "--vm", TEST_VM, "--metric", "vcpu_num", "--since", "5m", "--out"])
            .arg(&png)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");

        // Stock rrdtool graph reads our files too.
        let stock_png = dir.path().join("stock.png");
        let def = format!("DEF:v={}:cpu_idle:AVERAGE", host.join("cpu_idle.rrd").display());
        let st = Command::new("rrdtool")
            .arg("graph")
            .arg(&stock_png)
            .args(["-s", "-5m", &def, "LINE1:v#ff0000"])
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));

        // Clear errors for bad input.
        let out = Command::new(&bin)
            .args(["metrics", "fetch", "--data"])
            .arg(dir.path())
            .args(["--cluster", "e2e", "--host", "../etc", "--metric", "mem_total"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("bad host name"));
    }

    #[test]
    fn agent_without_key_fails_clearly() {
        let out = Command::new(amvm_tests::amvm_bin())
            .args(["agent", "--collector", "127.0.0.1:9", "--count", "1"])
            .env_remove("AMVM_CLUSTER_KEY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster key"));
    }

    /// A transient TCG QEMU domain under libvirtd; destroyed on drop.
    struct QemuDomain(String);

    impl Drop for QemuDomain {
        fn drop(&mut self) {
            let _ = Command::new("virsh").args(["-c", "qemu:///system", "destroy", &self.0]).output();
        }
    }

    fn start_qemu_domain() -> Option<(QemuDomain, String)> {
        let name = format!("amvm-monitor-e2e-{}", std::process::id());
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
             <interface type='ethernet'><model type='virtio'/></interface>\
             <memballoon model='virtio'/></devices></domain>"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("domain.xml");
        std::fs::write(&file, xml).unwrap();
        let out = Command::new("virsh").args(["-c", "qemu:///system", "create"]).arg(&file).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!("SKIP qemu domain: virsh create failed: {}", String::from_utf8_lossy(&o.stderr));
                return None;
            }
            Err(e) => {
                eprintln!("SKIP qemu domain: virsh not runnable: {e}");
                return None;
            }
        }
        let guard = QemuDomain(name.clone());
        let out = Command::new("virsh").args(["-c", "qemu:///system", "domuuid", &name]).output().unwrap();
        let uuid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some((guard, uuid))
    }

    /// VM metrics of a running QEMU guest through the real daemon (`qemu:///system`): CPU time,
    /// memory (rss/current fallback, the guest has no balloon driver running) and NIC counters.
    #[test]
    fn qemu_guest_metrics_through_libvirtd() {
        let Some((_domain, uuid)) = start_qemu_domain() else { return };
        let dir = tempfile::tempdir().unwrap();
        let collector = CollectorProc::start(dir.path(), &[]);
        run_agent(
            &collector.addr,
            &["--interval", "1", "--cluster", "q", "--name", "kvm-1", "--libvirt", "qemu:///system", "--count", "5"],
        );
        collector
            .wait_stats("5 reports written", |s| s["frames_ok"] == 5 && s["samples_written"] == s["samples_received"]);
        let vm = dir.path().join("rrds/q/vms").join(&uuid);
        let util = rrdtool_fetch(&vm.join("vcpu_util.rrd"), 60);
        assert!(
            !util.is_empty() && util.iter().all(|v| (0.0..=100.0).contains(v)) && util.iter().any(|v| *v > 0.0),
            "{util:?}"
        );
        let vmem = rrdtool_fetch(&vm.join("vmem_util.rrd"), 60);
        assert!(!vmem.is_empty() && vmem.iter().all(|v| *v > 0.0 && *v <= 100.0), "{vmem:?}");
        let total = rrdtool_fetch(&vm.join("vmem_total.rrd"), 60);
        assert!(total.iter().all(|v| *v == 64.0 * 1024.0 * 1024.0), "{total:?}");
        assert_eq!(rrdtool_fetch(&vm.join("vcpu_num.rrd"), 60).first(), Some(&1.0));
        // NIC counters are stored as DERIVE rates: the files exist and rates are never negative.
        let rx = rrdtool_fetch(&vm.join("vbytes_in.rrd"), 60);
        assert!(rx.iter().all(|v| *v >= 0.0), "{rx:?}");
    }
}
