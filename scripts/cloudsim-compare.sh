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
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
# wall, user and system seconds of each whole process (GNU time if present)
timed() { local out="$1"; shift; if [ -x /usr/bin/time ]; then /usr/bin/time -f "%e %U %S" -o "$out" "$@";
          else local a; a=$(date +%s.%N); "$@"; echo "$(echo "$(date +%s.%N) - $a" | bc) 0 0" > "$out"; fi; }
cs_json="$(JAVA_OPTS="${JAVA_OPTS:--Xmx1500m}" CLOUDSIM_VM_ORDER="$data/vm-order/$day.tsv" timed "$tmp/cs" "$cs/run.sh" "$data" "$day" "$csname")"
compat_json="$(timed "$tmp/compat" "$amvm" sim --trace "$data/$day" --strategy "$strategy" --compat cloudsim-3.0.3 --json)"
default_json="$(timed "$tmp/default" "$amvm" sim --trace "$data/$day" --strategy "$strategy" --json)"
python3 - "$cs_json" "$compat_json" "$default_json" "$(cat "$tmp/cs")" "$(cat "$tmp/compat")" "$(cat "$tmp/default")" "$speed" <<'PY'
import json, sys
cs, compat, dflt = (json.loads(a) for a in sys.argv[1:4])
tcs, tco, tde = ([float(x) for x in a.split()] for a in sys.argv[4:7])
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
if sys.argv[7] == "--speed":
    print(f"{'seconds':16} {'CloudSim':>12} {'compat':>12} {'speed-up':>9} {'default':>12} {'speed-up':>9}")
    for i, label in enumerate(["wall (process)", "CPU user+sys"]):
        c = tcs[0] if i == 0 else tcs[1] + tcs[2]
        a = tco[0] if i == 0 else tco[1] + tco[2]
        d = tde[0] if i == 0 else tde[1] + tde[2]
        print(f"{label:16} {c:12.3f} {a:12.3f} {c / a:8.0f}x {d:12.3f} {c / d:8.0f}x")
    print(f"CloudSim's own wall_s {cs['wall_s']:.2f}; amvm run only (elapsed_ms): compat "
          f"{compat['elapsed_ms']:.0f} ms, default {dflt['elapsed_ms']:.0f} ms")
PY
