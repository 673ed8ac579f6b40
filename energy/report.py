"""Energy reports of a run folder: ``energy.json``, ``energy.csv`` and ``report.html`` with PNG
plots beside it (``e2t energy report RUN_DIR``; every trainer writes one at the end of a run).

The figures are modeled (energy/model.py) and say so, with the model file, its table and the
source of every coefficient; what the model leaves out is listed. Measured figures (power
rails) will stand beside them where a run has them.
"""
from __future__ import annotations

import csv
import html
import io
import json
import os

from host.errors import E2TError
from host.runs import CONFIG, METRICS

from . import model as emodel
from .model import PHASE_NAMES

FOLDER = "energy"


def _records(run_dir: str) -> tuple[dict, list[dict]]:
    try:
        with open(os.path.join(run_dir, CONFIG)) as f:
            config = json.load(f)
        with open(os.path.join(run_dir, METRICS)) as f:
            records = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError as e:
        raise E2TError(f"{run_dir}: not a run folder ({os.path.basename(e.filename)} is missing)") from None
    except (OSError, ValueError) as e:
        raise E2TError(f"{run_dir}: cannot read the run's records ({e})") from None
    if not records:
        raise E2TError(f"{run_dir}: the run has no finished epoch yet")
    return config, records


def _plots(result: dict, folder: str) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = {}

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(folder, name), dpi=110)
        plt.close(fig)
        files[name] = name

    ep = result["epochs"]
    x = [e["epoch"] for e in ep]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.bar(x, [e["j"] for e in ep], color="#4c72b0", label="per epoch")
    ax2 = ax.twinx()
    ax2.plot(x, [e["cumulative_j"] for e in ep], color="#dd8452", marker=".", label="cumulative")
    ax.set_xlabel("epoch")
    if len(x) <= 20:
        ax.set_xticks(x)
    ax.set_ylabel("energy per epoch (J, modeled)")
    ax2.set_ylabel("cumulative energy (J, modeled)")
    ax.set_title("Engine energy per epoch and cumulative")
    save(fig, "energy_per_epoch.png")

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    acc = [(e["cumulative_j"], 100 * e["test_acc"]) for e in ep if e["test_acc"] is not None]
    ax.plot([a for a, _ in acc], [b for _, b in acc], marker="o")
    ax.set_xlabel("cumulative energy (J, modeled)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against energy")
    ax.grid(alpha=0.3)
    save(fig, "accuracy_vs_energy.png")

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    names = [PHASE_NAMES.get(p, p) for p in result["phases"]]
    mac = [v["mac_j"] for v in result["phases"].values()]
    ddr = [v["ddr_j"] for v in result["phases"].values()]
    ax.barh(names, mac, color="#4c72b0", label="MACs")
    ax.barh(names, ddr, left=mac, color="#55a868", label="DDR traffic")
    ax.set_xlabel("energy (J, modeled)")
    ax.set_title("Energy by phase")
    ax.legend()
    save(fig, "energy_by_phase.png")

    layers = sorted(result["layers"].items(), key=lambda kv: -kv[1])[:25]
    fig, ax = plt.subplots(figsize=(6.4, max(3.0, 0.22 * len(layers) + 1)))
    ax.barh([n for n, _ in layers][::-1], [v for _, v in layers][::-1], color="#8172b3")
    ax.set_xlabel("energy (J, modeled)")
    ax.set_title("Energy by layer" + (" (the 25 largest)" if len(result["layers"]) > 25 else ""))
    ax.tick_params(axis="y", labelsize=7)
    save(fig, "energy_by_layer.png")
    return files


def _html(result: dict, config: dict, images: dict) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(PHASE_NAMES.get(p, p))}</td><td>{v['mac_j']:.4g}</td><td>{v['ddr_j']:.4g}</td>"
                   f"<td>{v['j']:.4g}</td><td>{100 * v['j'] / result['total_j'] if result['total_j'] else 0:.1f} %</td></tr>"
                   for p, v in result["phases"].items())
    sources = "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in result["sources"].items())
    missing = "".join(f"<li>{e(m)}</li>" for m in result["not_modeled"])
    last = result["epochs"][-1]
    imgs = "".join(f'<figure><img src="{e(src)}" alt="{e(name)}"></figure>' for name, src in images.items())
    if result["measured"]:
        mrows = "".join(f"<tr><td>{e(n)}</td><td>{v['joules']:.4g}</td><td>{e(v['source'])}</td></tr>"
                        for n, v in result["measured"].items())
        measured = (f"<h2>Measured on rails (training stretches)</h2><p>Each rail's own joules, beside the "
                    f"model, never summed with it: a rail of this computer's CPU (RAPL) measures the machine "
                    f"that ran the emulation, not a board.</p><table><tr><th>rail</th><th>measured (J)</th>"
                    f"<th>source</th></tr>{mrows}</table>")
    else:
        measured = "<p>No power rail was read for this run.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>e2t energy report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}figure{{display:inline-block;margin:.5em}}
img{{max-width:100%}}.kind{{background:#fff3cd;padding:.4em .8em;border-radius:.3em}}</style></head><body>
<h1>Energy report: {e(config.get('model', '?'))} on {e(config.get('dataset', '?'))}</h1>
<p class="kind"><b>Modeled, not measured.</b> Table: {e(result['table'])}; model file <code>{e(result['model'])}</code>
(board {e(result['board'])}).</p>
<p>Run: backend {e(str(config.get('backend')))}, precision {e(str(config.get('precision')))}, PSG {e(str(config.get('psg')))},
SMD {e(str(config.get('smd')))}, SLU target {e(str(config.get('slu_target')))}; {len(result['epochs'])} epochs,
final test accuracy {100 * (last['test_acc'] or 0):.2f} %.</p>
<h2>Total: {result['total_j']:.4g} J (modeled)</h2>
<table><tr><th>phase</th><th>MACs (J)</th><th>DDR (J)</th><th>total (J)</th><th>share</th></tr>{rows}</table>
{imgs}
{measured}
<h2>Not in this model</h2><ul>{missing}</ul>
<h2>Sources of every coefficient</h2><ul>{sources}</ul>
</body></html>
"""


def write(run_dir: str, board: str | None = None, model_path: str | None = None) -> tuple[str, dict]:
    """Write the run's report into ``run_dir/energy/``; returns (report.html's path, the figures)."""
    config, records = _records(run_dir)
    model = emodel.load(board or config.get("board", "pynq-z2"), model_path)
    result = emodel.run_energy(records, model, board_time=config.get("backend") == "pynq")
    folder = os.path.join(run_dir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "energy.json"), "w") as f:
        json.dump(result, f, indent=1)
    buf = io.StringIO()
    phases = list(result["phases"])
    w = csv.writer(buf)
    rails = list(result["measured"])
    w.writerow(["epoch", "kind", "joules", "cumulative_joules", "test_acc"] + [f"{p}_joules" for p in phases]
               + [f"measured:{r}_joules" for r in rails])
    for ep in result["epochs"]:
        w.writerow([ep["epoch"], "modeled", f"{ep['j']:.6g}", f"{ep['cumulative_j']:.6g}", ep["test_acc"]]
                   + [f"{ep['phases'].get(p, {'j': 0})['j']:.6g}" for p in phases]
                   + [f"{ep['rails'].get(r, float('nan')):.6g}" for r in rails])
    with open(os.path.join(folder, "energy.csv"), "w") as f:
        f.write(buf.getvalue())
    images = _plots(result, folder)
    path = os.path.join(folder, "report.html")
    with open(path, "w") as f:
        f.write(_html(result, config, images))
    return path, result


def compare(runs: list[str], board: str | None = None, model_path: str | None = None) -> tuple[str, dict]:
    """The savings table of ``runs`` against the first (the baseline), priced by one model:
    (text, data). Energy, % saved and accuracy difference per run; the model is named."""
    first = _records(runs[0])[0]
    model = emodel.load(board or first.get("board", "pynq-z2"), model_path)
    rows = []
    for run in runs:
        config, records = _records(run)
        result = emodel.run_energy(records, model, board_time=config.get("backend") == "pynq")
        rows.append({"run": run, "j": result["total_j"], "test_acc": records[-1].get("test_acc") or 0.0,
                     "config": {k: config.get(k) for k in ("backend", "precision", "psg", "smd", "slu_target")}})
    base = rows[0]
    lines = [f"modeled energy ({model.table}; {model.path}), baseline {runs[0]}",
             f"{'run':<40}{'energy (J)':>12}{'saved':>9}{'d acc':>9}"]
    for r in rows:
        r["saved"] = 1 - r["j"] / base["j"] if base["j"] else 0.0
        r["d_acc"] = r["test_acc"] - base["test_acc"]
        lines.append(f"{os.path.basename(os.path.normpath(r['run'])):<40}{r['j']:>12.4g}{100 * r['saved']:>8.1f}%"
                     f"{100 * r['d_acc']:>+8.2f}")
    lines.append("not modeled: " + "; ".join(model.not_modeled))
    return "\n".join(lines), {"kind": "modeled", "model": model.path, "table": model.table,
                              "sources": model.sources, "rows": rows}
