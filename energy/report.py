"""Energy reports of a run folder: ``energy.json``, ``energy.csv`` and ``report.html`` with PNG
plots beside it (``e2t energy report RUN_DIR``; every trainer writes one at the end of a run),
in ``RUN_DIR/energy/`` when priced by the run's own board's model, and beside it when priced
by another board's or a model file (``folder_name``): no report replaces one priced otherwise.

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

from contract.errors import E2TError
from contract.jsonfile import parse
from contract.opcount import PHASE_NAMES
from contract.runs import CONFIG, METRICS, write_folder

from . import model as emodel

FOLDER = "energy"
NAMES = ("board", "backend", "model", "dataset", "precision")  # the config.json settings a report names
NUMBERS = ("smd", "slu_target", "psg_tau", "psg_ratio")  # and those it prints (null: not set)


def _records(run_dir: str) -> tuple[dict, list[dict]]:
    """The run's config.json and metrics.jsonl records, checked as the report reads them."""
    config_path, metrics_path = os.path.join(run_dir, CONFIG), os.path.join(run_dir, METRICS)
    try:
        with open(config_path) as f:
            config = parse(f.read())
        with open(metrics_path) as f:
            lines = [(n, parse(line)) for n, line in enumerate(f, 1) if line.strip()]
    except FileNotFoundError as e:
        raise E2TError(f"{run_dir}: not a run folder ({os.path.basename(e.filename)} is missing)") from None
    except (OSError, ValueError) as e:
        raise E2TError(f"{run_dir}: cannot read the run's records ({e})") from None
    if not lines:
        raise E2TError(f"{run_dir}: the run has no finished epoch yet")
    _check_config(config, config_path)
    for epoch, (n, record) in enumerate(lines, 1):
        _check_record(record, epoch, f"{metrics_path}: line {n}: ")
    return config, [record for _, record in lines]


def _check_config(config, path: str) -> None:
    """What a report reads of config.json: the ``NAMES`` strings, the ``NUMBERS`` finite and >= 0, psg a bool."""
    if not isinstance(config, dict):
        raise E2TError(f"{path}: {type(config).__name__} is not a run's config (a JSON object of settings)")
    for key in NAMES:
        if key in config:
            emodel.text(config[key], f"{path}: {key}")
    for key in NUMBERS:
        if config.get(key) is not None:
            emodel.number(config[key], f"{path}: {key}")
    if not isinstance(config.get("psg", False), bool):
        raise E2TError(f"{path}: psg: {repr(config['psg'])[:40]} is not true or false")


def _check_slot(slot, where: str) -> None:
    """A count slot: ``{"macs": {width: n}, "bytes": b}``, every count finite and >= 0."""
    for width, n in _table(_table(slot, where).get("macs", {}), where + ".macs").items():
        emodel.number(n, f"{where}.macs.{width}")
    if "bytes" in slot:
        emodel.number(slot["bytes"], f"{where}.bytes")


def _table(node, where: str) -> dict:
    """``node`` if it is a JSON object; otherwise one line naming ``where``."""
    if not isinstance(node, dict):
        raise E2TError(f"{where}: {repr(node)[:40]} is not a JSON object")
    return node


def _check_record(r, epoch: int, where: str) -> None:
    """What a report reads of the metrics record of ``epoch`` (``where``: its file and line):
    the epoch itself (records run 1, 2, ... each once), the accuracy, seconds, counts and rails."""
    r = _table(r, where + "the record")
    if type(r.get("epoch")) is not int or r["epoch"] != epoch:  # a bool is no epoch
        raise E2TError(f"{where}epoch {repr(r.get('epoch'))[:40]} where {epoch} is due (the records are "
                       f"epochs 1, 2, ... each once, in order)")
    for key in ("test_acc", "seconds"):
        if r.get(key) is not None:
            emodel.number(r[key], where + key)
    if r.get("ops"):  # none: run_energy says the run's trainer does not count its work
        ops = _table(r["ops"], where + "ops")
        for phase, slot in _table(ops.get("total"), where + "ops.total").items():
            _check_slot(slot, f"{where}ops.total.{phase}")
        for layer, per in _table(ops.get("per_layer", {}), where + "ops.per_layer").items():
            for phase, slot in _table(per, f"{where}ops.per_layer.{layer}").items():
                _check_slot(slot, f"{where}ops.per_layer.{layer}.{phase}")
    for name, rail in _table(r.get("rails", {}), where + "rails").items():
        emodel.number(_table(rail, f"{where}rails.{name}").get("joules"), f"{where}rails.{name}.joules")
        emodel.text(rail.get("source"), f"{where}rails.{name}.source")


def _plots(result: dict) -> dict[str, bytes]:
    """The report's PNG plots by file name."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = {}

    def save(fig, name):
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        files[name] = buf.getvalue()

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


def settings(config: dict) -> str:
    """A run's savings settings in words, e.g. "PSG on (tau 0), SMD off, SLU on (target 0.5)"."""
    psg = "PSG off"
    if config.get("psg"):
        ratio, tau = config.get("psg_ratio"), config.get("psg_tau")
        psg = f"PSG on (ratio {ratio:g})" if ratio is not None else f"PSG on (tau {tau:g})" if tau is not None else "PSG on"
    smd = f"SMD on (p {config['smd']:g})" if config.get("smd") else "SMD off"
    slu = f"SLU on (target {config['slu_target']:g})" if config.get("slu_target") is not None else "SLU off"
    return f"{psg}, {smd}, {slu}"


def _html(result: dict, config: dict, images: list[str]) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(PHASE_NAMES.get(p, p))}</td><td>{v['mac_j']:.4g}</td><td>{v['ddr_j']:.4g}</td>"
                   f"<td>{v['j']:.4g}</td><td>{100 * v['j'] / result['total_j'] if result['total_j'] else 0:.1f} %</td></tr>"
                   for p, v in result["phases"].items())
    sources = "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in result["sources"].items())
    missing = "".join(f"<li>{e(m)}</li>" for m in result["not_modeled"])
    last = result["epochs"][-1]
    imgs = "".join(f'<figure><img src="{e(name)}" alt="{e(name)}"></figure>' for name in images)
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
<p>Run: backend {e(str(config.get('backend')))}, precision {e(str(config.get('precision')))}, {e(settings(config))};
{len(result['epochs'])} epochs,
final test accuracy {100 * (last['test_acc'] or 0):.2f} %.</p>
<h2>Total: {result['total_j']:.4g} J (modeled)</h2>
<table><tr><th>phase</th><th>MACs (J)</th><th>DDR (J)</th><th>total (J)</th><th>share</th></tr>{rows}</table>
{imgs}
{measured}
<h2>Not in this model</h2><ul>{missing}</ul>
<h2>Sources of every coefficient</h2><ul>{sources}</ul>
</body></html>
"""


def _model(board: str | None, model_path: str | None, run_board: str) -> emodel.EnergyModel:
    """The model that prices a run: the file ``model_path``, else ``board``'s, else the run's board's."""
    for flag, value in (("--board", board), ("--model", model_path)):
        if value == "":
            raise E2TError(f"{flag} is empty: name a board or an energy model file, or leave it out")
    return emodel.load(board or run_board, model_path)


def folder_name(run_board: str, board: str | None, model_path: str | None) -> str:
    """A report's folder in the run: ``energy`` priced by the run's own board's model,
    ``energy-<board>`` by another board's, ``energy-<file name>`` by a model file."""
    if model_path is not None:
        return f"{FOLDER}-{os.path.splitext(os.path.basename(model_path))[0]}"
    return FOLDER if board in (None, run_board) else f"{FOLDER}-{os.path.basename(board)}"


def _check_replace(folder: str, model: emodel.EnergyModel, force: bool) -> None:
    """Re-writing a report of the same pricing (board and table) is normal; anything else in
    ``folder`` is replaced only with ``force``."""
    if not os.path.lexists(folder):
        return
    if not os.path.isdir(folder) or os.path.islink(folder):
        raise E2TError(f"{folder} is a file, not a report folder: move it away (the report is written there)")
    try:
        with open(os.path.join(folder, "energy.json")) as f:
            old = parse(f.read())
        priced = (old["board"], old["table"])
    except (OSError, ValueError, KeyError, TypeError):
        priced = None
    if priced != (model.board, model.table) and not force:
        what = f"a report priced by {priced[0]}'s {priced[1]!r}" if priced else "no report e2t wrote"
        raise E2TError(f"{folder} holds {what}, not {model.board}'s {model.table!r}: "
                       f"pass --force to replace it")


def write(run_dir: str, board: str | None = None, model_path: str | None = None,
          force: bool = False) -> tuple[str, dict]:
    """Write the run's report folder (``folder_name``) whole, replacing one of the same pricing
    (any other only with ``force``); returns (report.html's path, the figures)."""
    config, records = _records(run_dir)
    run_board = config.get("board", "pynq-z2")
    model = _model(board, model_path, run_board)
    folder = os.path.join(run_dir, folder_name(run_board, board, model_path))
    _check_replace(folder, model, force)
    result = emodel.run_energy(records, model, board_time=config.get("backend") == "pynq")
    files = {"energy.json": json.dumps(result, indent=1).encode()}
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
    files["energy.csv"] = buf.getvalue().encode()
    images = _plots(result)
    files.update(images)
    files["report.html"] = _html(result, config, list(images)).encode()
    write_folder(folder, files, replace=True, flag="report")
    return os.path.join(folder, "report.html"), result


SAME_TASK = ("model", "dataset", "image_size", "image_channels")  # what runs must share to be compared


def compare(runs: list[str], board: str | None = None, model_path: str | None = None,
            force: bool = False) -> tuple[str, dict]:
    """The savings table of ``runs`` against the first (the baseline), priced by one model:
    (text, data). Epochs, test accuracy, energy, % saved and accuracy difference per run; the
    model is named. Runs that differ from the baseline in a ``SAME_TASK`` field are refused
    unless ``force``."""
    loaded = [(run, *_records(run)) for run in runs]
    first = loaded[0][1]
    for run, config, _ in loaded[1:]:
        differ = [k for k in SAME_TASK if config.get(k) != first.get(k)]
        if differ and not force:
            k = differ[0]
            raise E2TError(f"{run} trains {k} {config.get(k)}, the baseline {runs[0]} {first.get(k)}: its savings "
                           f"would not compare the same training (pass --force to compare anyway)")
    model = _model(board, model_path, first.get("board", "pynq-z2"))
    rows = []
    for run, config, records in loaded:
        result = emodel.run_energy(records, model, board_time=config.get("backend") == "pynq")
        rows.append({"run": run, "epochs": records[-1].get("epoch"), "j": result["total_j"],
                     "test_acc": records[-1].get("test_acc") or 0.0,
                     "config": {k: config.get(k) for k in ("backend", "precision", "psg", "smd", "slu_target")}})
    base = rows[0]
    lines = [f"modeled energy ({model.table}; {model.path}), baseline {runs[0]}",
             f"{'run':<40}{'epochs':>7}{'test acc':>11}{'energy (J)':>12}{'saved':>9}{'d acc':>9}"]
    if len({r["epochs"] for r in rows}) > 1:
        lines.insert(1, "note: the runs trained different numbers of epochs: their joules are not of the same training")
    for r in rows:
        r["saved"] = 1 - r["j"] / base["j"] if base["j"] else 0.0
        r["d_acc"] = r["test_acc"] - base["test_acc"]
        lines.append(f"{os.path.basename(os.path.normpath(r['run'])):<40}{r['epochs']!s:>7}{100 * r['test_acc']:>9.2f} %"
                     f"{r['j']:>12.4g}{100 * r['saved']:>8.1f}%{100 * r['d_acc']:>+8.2f}")
    lines.append("not modeled: " + "; ".join(model.not_modeled))
    return "\n".join(lines), {"kind": "modeled", "model": model.path, "table": model.table,
                              "sources": model.sources, "rows": rows}
