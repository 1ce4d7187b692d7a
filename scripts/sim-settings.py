#!/usr/bin/env python3
"""The measured effect of each named default-model setting that switches on a CloudSim quirk.

    scripts/sim-settings.py [--days D1,D2] [--experiments npa,dvfs,...] [--write]

For every cached CloudSim run (docs/cloudsim-3.0.3-results.jsonl) of the chosen experiments
(default: npa, dvfs, lr-mmt-1.2, thr-mmt-0.8), runs `amvm sim --json` in the default model,
then once more per setting with a scenario that switches it on, and prints a Markdown table:
per setting and experiment, the range over the days of each metric's relative change, and the
worst relative error against CloudSim over the five metrics before → after. --write puts it into
docs/simulation.md between the sim-settings markers. Uses target/release/amvm (or $AMVM).
"""
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
cloudsim_table = __import__("cloudsim-table")

ROOT = cloudsim_table.ROOT
DATA, AMVM, DOC = cloudsim_table.DATA, cloudsim_table.AMVM, cloudsim_table.DOC
METRICS = cloudsim_table.METRICS
BEGIN, END = "<!-- sim-settings:begin -->", "<!-- sim-settings:end -->"
# LRR with plain least squares: `lrr-mmt-1.2` as a strategy file with the `lrr` policy's `robust = 0`.
LRR_PLAIN = """name = "lrr-mmt-1.2"
[threshold]
module = "lrr"
[threshold.params]
safety = 1.2
lower = 1.0
robust = 0
[selection]
module = "mmt"
[placement]
module = "pabfd"
"""
# (name in docs/simulation.md's quirks table, the scenario that switches it on, a strategy file
# that replaces the experiment's built-in strategy (or None), the experiments it applies to (None:
# all chosen))
SETTINGS = [
    ("shutdown-from-active", '[metrics]\nshutdowns = "active-transitions"\n', None, None),
    ("npa-287-intervals", "[metrics]\nfinal_interval = false\n", None, None),
    ("event-offset", "step_offset_s = 0.1\n", None, None),
    ("lr-equals-lrr", "", LRR_PLAIN, ["lrr-mmt-1.2"]),
    ("mode-accounting (off)", "[migration]\nmode_accounting = false\n", None, None),
    ("all four scenario settings", 'step_offset_s = 0.1\n[metrics]\nshutdowns = "active-transitions"\nfinal_interval = false\n'
     "[migration]\nmode_accounting = false\n", None, ["npa", "dvfs", "lr-mmt-1.2", "thr-mmt-0.8"]),
]


def amvm(day, exp, scenario):
    args = [AMVM, "sim", "--trace", os.path.join(DATA, day), "--strategy", exp, "--json"]
    if scenario:
        args += ["--scenario", scenario]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def fmt_range(pairs):
    """The range of relative changes (new, old) over the days; from 0, the range of new values."""
    if any(old == 0 and new != 0 for new, old in pairs):
        news = [new for new, _ in pairs]
        lo, hi = min(news), max(news)
        return f"0 → {lo:,.0f}" if lo == hi else f"0 → {lo:,.0f} … {hi:,.0f}"
    vals = [0.0 if old == 0 else (new - old) / old for new, old in pairs]

    def f(v):
        return f"{v * 100:+.1f} %"
    lo, hi = min(vals), max(vals)
    return f(lo) if f(lo) == f(hi) else f"{f(lo)} … {f(hi)}"


def main():
    argv = sys.argv[1:]
    runs = cloudsim_table.load_cache()
    days = set(argv[argv.index("--days") + 1].split(",")) if "--days" in argv else None
    exps = (argv[argv.index("--experiments") + 1].split(",") if "--experiments" in argv
            else ["npa", "dvfs", "lr-mmt-1.2", "thr-mmt-0.8", "lrr-mmt-1.2"])
    keys = sorted(k for k in runs if k[1] in exps and (days is None or k[0] in days))
    tmp = tempfile.mkdtemp(prefix="amvm-sim-settings-")
    files, strategies = [], []
    for i, (_, toml, strategy, _) in enumerate(SETTINGS):
        path = os.path.join(tmp, f"s{i}.toml")
        with open(path, "w") as f:
            f.write(toml)
        files.append(path)
        if strategy:
            path = os.path.join(tmp, f"strategy{i}.toml")
            with open(path, "w") as f:
                f.write(strategy)
        strategies.append(path if strategy else None)
    applies = [[k for k in keys if only is None or k[1] in only] for (_, _, _, only) in SETTINGS]
    jobs = [(k, None) for k in keys] + [(k, i) for i, ks in enumerate(applies) for k in ks]

    def one(job):
        (day, exp), i = job
        return amvm(day, exp, None) if i is None else amvm(day, strategies[i] or exp, files[i])
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        res = dict(zip(jobs, pool.map(one, jobs)))

    def worst_error(k, r):
        js = runs[k]
        return max(abs(cloudsim_table.rel(r[key], min(j[key] for j in js), max(j[key] for j in js)))
                   for _, key, _ in METRICS)

    out = ["| setting | experiment | days | " + " | ".join(f"{m[0]} Δ" for m in METRICS)
           + " | worst error vs CloudSim, before → after |",
           "|---|---|---:|" + "---:|" * len(METRICS) + "---|"]
    for f, ((name, _, _, _), ks_all) in enumerate(zip(SETTINGS, applies)):
        for exp in exps:
            ks = [k for k in ks_all if k[1] == exp]
            if not ks:
                continue
            cells = [f"`{name}`", exp, str(len(ks))]
            for _, key, _ in METRICS:
                cells.append(fmt_range([(res[(k, f)][key], res[(k, None)][key]) for k in ks]))
            before = max(worst_error(k, res[(k, None)]) for k in ks)
            after = max(worst_error(k, res[(k, f)]) for k in ks)
            cells.append(f"{before * 100:.1f} % → {after * 100:.1f} %")
            out.append("| " + " | ".join(cells) + " |")
    table = "\n".join(out)
    print(table)
    if "--write" in argv:
        doc = open(DOC).read()
        pre, rest = doc.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        open(DOC, "w").write(pre + BEGIN + "\n" + table + "\n" + END + post)


if __name__ == "__main__":
    main()
