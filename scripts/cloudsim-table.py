#!/usr/bin/env python3
"""Side-by-side table: CloudSim 3.0.3 (cached JSON lines) vs `amvm sim` in both modes.

    scripts/cloudsim-table.py [--refresh] [--days D1,D2] [--write]

Reads docs/cloudsim-3.0.3-results.jsonl (CloudSim's JSON lines, one per run; several lines for the
same rs experiment are its unseeded spread), runs `amvm sim --json` with and without
`--compat cloudsim-3.0.3` for every cached (day, experiment), and prints a Markdown table with the
relative errors and the worst error per metric. --write puts it into docs/simulation.md between
the cloudsim-table markers. --refresh reruns CloudSim for every cached line first (slow: about
a minute per migrating experiment; needs a JRE and ../shared/reference/cloudsim).
"""
import concurrent.futures as cf
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "docs", "cloudsim-3.0.3-results.jsonl")
DATA = os.environ.get("PLANETLAB_DIR", os.path.join(ROOT, "..", "shared", "data", "planetlab"))
AMVM = os.environ.get("AMVM", os.path.join(ROOT, "target", "release", "amvm"))
DOC = os.path.join(ROOT, "docs", "simulation.md")
BEGIN, END = "<!-- cloudsim-table:begin -->", "<!-- cloudsim-table:end -->"
METRICS = [("energy", "energy_kwh", 0.01), ("migrations", "migrations", 0.03), ("SLATAH", "slatah", 0.05),
           ("PDM", "pdm", 0.05), ("shutdowns", "host_shutdowns", 0.03)]
ORDER = ["npa", "dvfs"] + [f"{d}-{s}-{p}" for s in ("mmt", "mc", "mu", "rs")
                           for d, p in (("thr", "0.8"), ("iqr", "1.5"), ("mad", "2.5"), ("lr", "1.2"), ("lrr", "1.2"))]


def load_cache():
    runs = {}
    with open(CACHE) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            j = json.loads(line)
            day, exp = j["workload"], j["experiment"].split("_", 1)[1].replace("_", "-")
            runs.setdefault((day, exp), []).append(j)
    return runs


def refresh(runs):
    cs = os.path.join(ROOT, "..", "shared", "reference", "cloudsim", "run.sh")
    lines = []
    for (day, exp), js in sorted(runs.items()):
        for _ in js:
            env = dict(os.environ, CLOUDSIM_VM_ORDER=os.path.join(DATA, "vm-order", day + ".tsv"),
                       JAVA_OPTS=os.environ.get("JAVA_OPTS", "-Xmx1500m -XX:+UseSerialGC"))
            out = subprocess.run([cs, DATA, day, exp.replace("-", "_")], env=env, check=True,
                                 capture_output=True, text=True).stdout.strip()
            lines.append(out)
    with open(CACHE, "w") as f:
        f.write("\n".join(lines) + "\n")


def amvm(day, exp, compat):
    args = [AMVM, "sim", "--trace", os.path.join(DATA, day), "--strategy", exp, "--json"]
    if compat:
        args += ["--compat", "cloudsim-3.0.3"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def rel(ours, lo, hi):
    """Relative error against a value, or against the nearest end of a spread (0 inside it)."""
    if lo != hi and lo <= ours <= hi:
        return 0.0
    ref = lo if ours <= lo else hi
    if ref == 0:
        return 0.0 if ours == 0 else float("inf")
    return (ours - ref) / ref


def main():
    argv = sys.argv[1:]
    runs = load_cache()
    if "--refresh" in argv:
        refresh(runs)
        runs = load_cache()
    days = None
    if "--days" in argv:
        days = set(argv[argv.index("--days") + 1].split(","))
    keys = sorted((k for k in runs if days is None or k[0] in days),
                  key=lambda k: (k[0], ORDER.index(k[1]) if k[1] in ORDER else 99))
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        compat = dict(zip(keys, pool.map(lambda k: amvm(k[0], k[1], True), keys)))
        default = dict(zip(keys, pool.map(lambda k: amvm(k[0], k[1], False), keys)))
    out = []
    out.append("| day | experiment | CloudSim energy kWh | migrations | SLATAH % | PDM % | shutdowns "
               "| compat energy | migr. | SLATAH | PDM | shutd. | default energy | migr. | SLATAH | PDM | shutd. |")
    out.append("|---|---|" + "---:|" * 15)
    worst = {"compat": {m[0]: (0.0, "") for m in METRICS}, "default": {m[0]: (0.0, "") for m in METRICS}}
    within = {"compat": 0, "default": 0}
    for k in keys:
        js = runs[k]
        cells = [k[0], k[1] + (f" ({len(js)} runs)" if len(js) > 1 else "")]
        for label, key, _ in METRICS:
            vals = [j[key] * (100 if key in ("slatah", "pdm") else 1) for j in js]
            lo, hi = min(vals), max(vals)
            fmt = (lambda v: f"{v:,.0f}") if key in ("migrations", "host_shutdowns") else (
                lambda v: f"{v:.2f}" if key == "energy_kwh" else f"{v:.3f}")
            cells.append(fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}")
        for mode, res in (("compat", compat[k]), ("default", default[k])):
            ok = True
            for label, key, tol in METRICS:
                vals = [j[key] for j in js]
                e = rel(res[key], min(vals), max(vals))
                if abs(e) > abs(worst[mode][label][0]):
                    worst[mode][label] = (e, f"{k[0]} {k[1]}")
                if abs(e) > tol:
                    ok = False
                cells.append(f"{e * 100:+.1f} %" if e != float("inf") else "∞")
            within[mode] += ok
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(f"Cells of the two amvm modes are relative errors against CloudSim (rs: against the nearest end of "
               f"CloudSim's spread). Rows within every tolerance (energy ±1 %, migrations ±3 %, SLATAH/PDM ±5 %, "
               f"shutdowns ±3 %): compat {within['compat']}/{len(keys)}, default {within['default']}/{len(keys)}.")
    out.append("")
    out.append("| worst relative error | " + " | ".join(m[0] for m in METRICS) + " |")
    out.append("|---|" + "---|" * len(METRICS))
    for mode in ("compat", "default"):
        def show(e, where):
            if e == 0:
                return "0 (exact everywhere)"
            size = f"{e:+.1e} relative" if abs(e) < 1e-4 else f"{e * 100:+.2f} %"
            return f"{size} ({where})"
        out.append(f"| {mode} | " + " | ".join(show(*worst[mode][m[0]]) for m in METRICS) + " |")
    table = "\n".join(out)
    print(table)
    if "--write" in argv:
        doc = open(DOC).read()
        if BEGIN in doc:
            pre, rest = doc.split(BEGIN, 1)
            post = rest.split(END, 1)[1]
            doc = pre + BEGIN + "\n" + table + "\n" + END + post
        else:
            doc += "\n" + BEGIN + "\n" + table + "\n" + END + "\n"
        open(DOC, "w").write(doc)


if __name__ == "__main__":
    main()
