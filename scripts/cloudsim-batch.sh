#!/usr/bin/env bash
# cloudsim-batch.sh OUT.jsonl DAY EXPERIMENT...  — run CloudSim 3.0.3 for each experiment on DAY and
# append its JSON line to OUT.jsonl (skipping experiments already cached there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cs="${CLOUDSIM_DIR:-$root/../shared/reference/cloudsim}"
data="${PLANETLAB_DIR:-$root/../shared/data/planetlab}"
out="$1"; day="$2"; shift 2
touch "$out"
for exp in "$@"; do
  if grep -q "\"experiment\":\"${day}_${exp}\"" "$out"; then continue; fi
  line="$(JAVA_OPTS="${JAVA_OPTS:--Xmx1500m -XX:+UseSerialGC}" CLOUDSIM_VM_ORDER="$data/vm-order/$day.tsv" \
    "$cs/run.sh" "$data" "$day" "$exp")" || { echo "cloudsim failed: $day $exp" >&2; continue; }
  echo "$line" >> "$out"
done
