#!/usr/bin/env bash
# cloudsim-compare.sh DAY STRATEGY [--speed]
#   Runs CloudSim 3.0.3 (../shared/reference/cloudsim/run.sh) and `amvm sim` in both modes
#   (default model, --compat cloudsim-3.0.3) on one PlanetLab day and prints them side by side
#   with relative errors. STRATEGY: npa, dvfs, lr-mmt-1.2, thr-mc-0.8, ... (our naming).
#   --speed: also time the three runs (wall clock, same machine) and print the speed-up.
#   Developer tool: skips (exit 0) with a message when there is no JRE or no CloudSim folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cs="${CLOUDSIM_DIR:-$root/../shared/reference/cloudsim}"
data="${PLANETLAB_DIR:-$root/../shared/data/planetlab}"
if [ $# -lt 2 ]; then sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; fi
day="$1"; strategy="$2"; speed="${3:-}"
if ! command -v "${JAVA:-java}" >/dev/null 2>&1; then
  echo "cloudsim-compare: skipped: no Java runtime (Debian: apt-get install openjdk-17-jre-headless)"; exit 0
fi
if [ ! -x "$cs/run.sh" ]; then echo "cloudsim-compare: skipped: no CloudSim reference at $cs"; exit 0; fi
amvm="${AMVM:-$root/target/release/amvm}"
if [ ! -x "$amvm" ]; then (cd "$root" && cargo build --release -q -p amvm-host); fi
csname="$(echo "$strategy" | tr '-' '_')"
now() { date +%s.%N; }
t0=$(now)
cs_json="$(JAVA_OPTS="${JAVA_OPTS:--Xmx1500m}" CLOUDSIM_VM_ORDER="$data/vm-order/$day.tsv" "$cs/run.sh" "$data" "$day" "$csname")"
t1=$(now)
compat_json="$("$amvm" sim --trace "$data/$day" --strategy "$strategy" --compat cloudsim-3.0.3 --json)"
t2=$(now)
default_json="$("$amvm" sim --trace "$data/$day" --strategy "$strategy" --json)"
t3=$(now)
python3 - "$cs_json" "$compat_json" "$default_json" "$t0" "$t1" "$t2" "$t3" "$speed" <<'PY'
import json, sys
cs, compat, dflt = (json.loads(a) for a in sys.argv[1:4])
t0, t1, t2, t3 = (float(x) for x in sys.argv[4:8])
def rel(a, b):
    if b == 0: return "exact" if a == 0 else "n/a"
    return f"{(a - b) / b * 100:+.2f} %"
rows = [("energy kWh", "energy_kwh", 1), ("migrations", "migrations", 1), ("SLATAH %", "slatah", 100),
        ("PDM %", "pdm", 100), ("host shutdowns", "host_shutdowns", 1)]
print(f"{cs['experiment']}: CloudSim 3.0.3 vs amvm --compat cloudsim-3.0.3 vs amvm (default model)")
print(f"{'metric':16} {'CloudSim':>12} {'compat':>12} {'rel':>9} {'default':>12} {'rel':>9}")
for label, key, k in rows:
    c, a, d = cs[key] * k, compat[key] * k, dflt[key] * k
    print(f"{label:16} {c:12.4f} {a:12.4f} {rel(a, c):>9} {d:12.4f} {rel(d, c):>9}")
if sys.argv[8] == "--speed":
    cs_s, co_s, de_s = t1 - t0, t2 - t1, t3 - t2
    print(f"wall clock (whole process): CloudSim {cs_s:.2f} s (its own wall_s {cs['wall_s']:.2f}), "
          f"compat {co_s:.3f} s ({cs_s / co_s:.0f}x), default {de_s:.3f} s ({cs_s / de_s:.0f}x)")
    print(f"run only: compat {compat['elapsed_ms']:.1f} ms, default {dflt['elapsed_ms']:.1f} ms")
PY
