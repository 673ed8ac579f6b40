"""Energy reports of a run folder: ``energy.json``, ``energy.csv`` and ``report.html`` with PNG
plots beside it (``e2t energy report RUN_DIR``; every trainer writes one at the end of a run),
in ``RUN_DIR/energy/`` when priced by the run's own board's model, and beside it when priced
by another board's or a model file (``folder_name``): no report replaces one priced otherwise.

The figures are modeled and say so, with the model file, its table and the source of every
coefficient; what the model leaves out is listed. Two totals, named apart: the whole board
(energy/wholeboard.py: modeled board time, joules by engine / host / static / idle) where the
run's records hold the host's counts and the engine's cycles, and the engine's dynamic joules
(energy/model.py: MACs and DDR bytes, by phase and layer), its part "engine". Measured figures
(power rails) stand beside them where a run has them, never summed with them.
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

from . import model as emodel, steptime, wholeboard

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
    """An engine count slot: ``{"macs": {width: n}, "bytes": b, "cycles": c}``, every count finite and >= 0."""
    for width, n in _table(_table(slot, where).get("macs", {}), where + ".macs").items():
        emodel.number(n, f"{where}.macs.{width}")
    for key in ("bytes", "cycles"):
        if key in slot:
            emodel.number(slot[key], f"{where}.{key}")


def _check_host_slot(slot, where: str) -> None:
    """A host count slot: bytes, read, written, calls and flops by a kind the time model prices."""
    for key in ("bytes", "read", "written", "calls"):
        if key in _table(slot, where):
            emodel.number(slot[key], f"{where}.{key}")
    for kind, n in _table(slot.get("flops", {}), where + ".flops").items():
        if kind not in steptime.FLOP_RATES:
            raise E2TError(f"{where}.flops: {kind!r} is not a kind of arithmetic the time model prices "
                           f"({', '.join(steptime.FLOP_RATES)})")
        emodel.number(n, f"{where}.flops.{kind}")


def _check_counts(counts: dict, where: str, check) -> None:
    """``counts``' ``total`` (phase -> slot) and ``per_layer`` (layer -> phase -> slot), each slot by ``check``."""
    for phase, slot in _table(counts.get("total", {}), where + ".total").items():
        check(slot, f"{where}.total.{phase}")
    for layer, per in _table(counts.get("per_layer", {}), where + ".per_layer").items():
        for phase, slot in _table(per, f"{where}.per_layer.{layer}").items():
            check(slot, f"{where}.per_layer.{layer}.{phase}")


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
    for key in ("test_acc", "seconds", "init_test_acc"):
        if r.get(key) is not None:
            emodel.number(r[key], where + key)
    if r.get("ops"):  # none: run_energy says the run's trainer does not count its work
        ops = _table(r["ops"], where + "ops")
        _table(ops.get("total"), where + "ops.total")
        _check_counts(ops, where + "ops", _check_slot)
        if "host" in ops:
            _check_counts(_table(ops["host"], where + "ops.host"), where + "ops.host", _check_host_slot)
    for name, rail in _table(r.get("rails", {}), where + "rails").items():
        emodel.number(_table(rail, f"{where}rails.{name}").get("joules"), f"{where}rails.{name}.joules")
        emodel.text(rail.get("source"), f"{where}rails.{name}.source")


def whole_board(records: list[dict], model: emodel.EnergyModel, on_board: bool = False) -> dict:
    """The run's modeled board time and whole-board joules on the model's board
    (energy/wholeboard.py), with the model file; ``priced`` False and ``why`` (a sentence) when
    its records lack the counts it needs. A run on a board (``on_board``) keeps each epoch's
    measured seconds beside the modeled ones (``measured_s``)."""
    why = wholeboard.missing(records)
    if why:
        return {"priced": False, "why": why}
    wb = {"priced": True, "model": model.path, "part_names": wholeboard.PART_NAMES,
          **wholeboard.run(records, model, model.board)}
    if on_board:
        for ep, r in zip(wb["epochs"], records):
            ep["measured_s"] = float(r.get("seconds") or 0.0)
        wb["measured_s"] = sum(ep["measured_s"] for ep in wb["epochs"])
    return wb


PART_COLORS = {"engine": "#4c72b0", "host": "#dd8452", "static": "#8172b3", "idle": "#937860"}
WHOLE_BOARD_PLOT = "whole_board_per_epoch.png"


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
    wb = result["whole_board"]
    if wb["priced"]:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        bottom = [0.0] * len(x)
        for part in wholeboard.PARTS:
            joules = [e["parts"][part] for e in wb["epochs"]]
            ax.bar(x, joules, bottom=bottom, color=PART_COLORS[part], label=wholeboard.PART_NAMES[part])
            bottom = [b + j for b, j in zip(bottom, joules)]
        ax.set_xlabel("epoch")
        if len(x) <= 20:
            ax.set_xticks(x)
        ax.set_ylabel("energy per epoch (J, modeled)")
        ax.set_title("Whole-board energy per epoch, by part")
        ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        save(fig, WHOLE_BOARD_PLOT)

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
    ax.set_title("Accuracy against engine energy (dynamic)")
    ax.grid(alpha=0.3)
    save(fig, "accuracy_vs_energy.png")

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    names = [PHASE_NAMES.get(p, p) for p in result["phases"]]
    mac = [v["mac_j"] for v in result["phases"].values()]
    ddr = [v["ddr_j"] for v in result["phases"].values()]
    ax.barh(names, mac, color="#4c72b0", label="MACs")
    ax.barh(names, ddr, left=mac, color="#55a868", label="DDR traffic")
    ax.set_xlabel("energy (J, modeled)")
    ax.set_title("Engine energy (dynamic) by phase")
    ax.legend()
    save(fig, "energy_by_phase.png")

    layers = sorted(result["layers"].items(), key=lambda kv: -kv[1])[:25]
    fig, ax = plt.subplots(figsize=(6.4, max(3.0, 0.22 * len(layers) + 1)))
    ax.barh([n for n, _ in layers][::-1], [v for _, v in layers][::-1], color="#8172b3")
    ax.set_xlabel("energy (J, modeled)")
    ax.set_title("Engine energy (dynamic) by layer" + (" (the 25 largest)" if len(result["layers"]) > 25 else ""))
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


def _whole_board_html(wb: dict, run_board: str, figure: str) -> str:
    """The report's whole-board section: its time per epoch, its joules by part (they sum to its
    total), the plot; or the sentence saying why the run is not priced whole-board."""
    e = html.escape
    if not wb["priced"]:
        return (f"<h2>Whole board: not priced</h2><p>The whole board is not priced: {e(wb['why'])}. The figures "
                f"below are the engine's alone.</p>")
    parts = "".join(f"<tr><td>{e(wb['part_names'][p])}</td><td>{j:.4g}</td>"
                    f"<td>{100 * j / wb['j'] if wb['j'] else 0:.1f} %</td></tr>" for p, j in wb["parts"].items())
    times = "".join(f"<tr><td>{ep['epoch']}</td><td>{ep['seconds']:.4g}</td><td>{ep['engine_s']:.4g}</td>"
                    f"<td>{ep['host_s']:.4g}</td><td>{ep['overlap_s']:.4g}</td><td>{ep['ddr_s']:.4g}</td>"
                    f"<td>{e(ep['bound'])}</td><td>{ep['j']:.4g}</td>"
                    + (f"<td>{ep['measured_s']:.4g}</td>" if "measured_s" in ep else "") + "</tr>" for ep in wb["epochs"])
    measured = ("<th>measured on the board (s)</th>", f"<th>{wb['measured_s']:.4g}</th>") if "measured_s" in wb else ("", "")
    other = (f" The engine's cycles are those the run counted for {e(run_board)}'s engine, at {e(wb['board'])}'s "
             f"clock." if run_board != wb["board"] else "")
    return f"""<h2>Whole board: {wb['j']:.4g} J over {wb['seconds']:.4g} s of board time (modeled)</h2>
<p>Modeled, not measured: the board's time from the engine's modeled cycles and the host's counted work at
the host's rates and the DDR's bandwidth, the watts of the PL, the PS and the rest of the board over that time,
all from <code>{e(wb['model'])}</code> (board {e(wb['board'])}; each figure's source below).{other}
The host was busy (its counted numpy work) for {100 * wb['host_share']:.1f} % of the board time.</p>
<table><tr><th>part</th><th>energy (J)</th><th>share</th></tr>{parts}
<tr><th>whole board</th><th>{wb['j']:.4g}</th><th>100 %</th></tr></table>
<table><tr><th>epoch</th><th>board time (s)</th><th>engine busy (s)</th><th>host busy (s)</th><th>overlap (s)</th>
<th>DDR floor (s)</th><th>bound by</th><th>whole board (J)</th>{measured[0]}</tr>{times}
<tr><th>all</th><th>{wb['seconds']:.4g}</th><th>{wb['engine_s']:.4g}</th><th>{wb['host_s']:.4g}</th>
<th>{wb['overlap_s']:.4g}</th><th>{wb['ddr_s']:.4g}</th><th></th><th>{wb['j']:.4g}</th>{measured[1]}</tr></table>
{figure}
"""


def _html(result: dict, config: dict, images: list[str]) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(PHASE_NAMES.get(p, p))}</td><td>{v['mac_j']:.4g}</td><td>{v['ddr_j']:.4g}</td>"
                   f"<td>{v['j']:.4g}</td><td>{100 * v['j'] / result['total_j'] if result['total_j'] else 0:.1f} %</td></tr>"
                   for p, v in result["phases"].items())
    sources = "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in result["sources"].items())
    missing = "".join(f"<li>{e(m)}</li>" for m in result["not_modeled"])
    last = result["epochs"][-1]
    figure = lambda name: f'<figure><img src="{e(name)}" alt="{e(name)}"></figure>'  # noqa: E731
    imgs = "".join(figure(name) for name in images if name != WHOLE_BOARD_PLOT)
    wb = result["whole_board"]
    start = "" if result.get("init_test_acc") is None else \
        f" (from {100 * result['init_test_acc']:.2f} % before training: the --init network)"
    whole = _whole_board_html(wb, config.get("board", "pynq-z2"),
                              figure(WHOLE_BOARD_PLOT) if WHOLE_BOARD_PLOT in images else "")
    engine_part = " (the part &quot;engine&quot; of the whole board above)" if wb["priced"] else ""
    headline = (f"whole board {wb['j']:.4g} J, of which the engine's dynamic energy {result['total_j']:.4g} J"
                if wb["priced"] else f"engine (dynamic) {result['total_j']:.4g} J; the whole board is not priced")
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
(board {e(result['board'])}). In all: {headline} (modeled).</p>
<p>Run: backend {e(str(config.get('backend')))}, precision {e(str(config.get('precision')))}, {e(settings(config))};
{len(result['epochs'])} epochs,
final test accuracy {100 * (last['test_acc'] or 0):.2f} %{start}.</p>
{whole}
<h2>Engine (dynamic): {result['total_j']:.4g} J (modeled)</h2>
<p>The engine's MACs priced by their operand widths and its DDR bytes, phase by phase{engine_part}.</p>
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


def priced(records: list[dict], model: emodel.EnergyModel, on_board: bool = False) -> dict:
    """A run's figures: the engine's dynamic joules (``run_energy``) and ``whole_board`` (with the
    measured seconds of a run ``on_board``); a run not priced whole-board lists the whole board
    among what the model leaves out."""
    result = emodel.run_energy(records, model)
    result["init_test_acc"] = records[0].get("init_test_acc")  # an --init run's starting accuracy (epoch 0)
    result["whole_board"] = whole_board(records, model, on_board)
    if not result["whole_board"]["priced"]:
        result["not_modeled"].insert(0, "the whole board (the host CPU, PL and PS static power, the idle board, "
                                        "board time): not priced, " + result["whole_board"]["why"])
    return result


def write(run_dir: str, board: str | None = None, model_path: str | None = None,
          force: bool = False) -> tuple[str, dict]:
    """Write the run's report folder (``folder_name``) whole, replacing one of the same pricing
    (any other only with ``force``); returns (report.html's path, the figures)."""
    config, records = _records(run_dir)
    run_board = config.get("board", "pynq-z2")
    model = _model(board, model_path, run_board)
    folder = os.path.join(run_dir, folder_name(run_board, board, model_path))
    _check_replace(folder, model, force)
    result = priced(records, model, on_board=config.get("backend") == "pynq" and model.board == run_board)
    files = {"energy.json": json.dumps(result, indent=1).encode()}
    buf = io.StringIO()
    phases = list(result["phases"])
    w = csv.writer(buf)
    rails = list(result["measured"])
    wb = result["whole_board"]
    board = ["board_seconds", "engine_busy_seconds", "host_busy_seconds", "overlap_seconds", "ddr_floor_seconds",
             "bound", "whole_board_joules", *(f"whole_board:{p}_joules" for p in wholeboard.PARTS)]
    board = board if wb["priced"] else []
    w.writerow(["epoch", "kind", "engine_joules", "engine_cumulative_joules", "test_acc"]
               + [f"engine:{p}_joules" for p in phases]
               + [f"measured:{r}_joules" for r in rails] + board)
    for i, ep in enumerate(result["epochs"]):
        b = wb["epochs"][i] if wb["priced"] else None
        w.writerow([ep["epoch"], "modeled", f"{ep['j']:.6g}", f"{ep['cumulative_j']:.6g}", ep["test_acc"]]
                   + [f"{ep['phases'].get(p, {'j': 0})['j']:.6g}" for p in phases]
                   + [f"{ep['rails'].get(r, float('nan')):.6g}" for r in rails]
                   + ([f"{b[k]:.6g}" for k in ("seconds", "engine_s", "host_s", "overlap_s", "ddr_s")] + [b["bound"]]
                      + [f"{b['j']:.6g}"] + [f"{b['parts'][p]:.6g}" for p in wholeboard.PARTS] if b else []))
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
    (text, data). Epochs, test accuracy, the engine's dynamic joules and % saved, the modeled
    board seconds, whole-board joules and % saved ("-" where a run is not priced whole-board, with
    a note line why), and the accuracy difference per run; the model is named. Runs that differ
    from the baseline in a ``SAME_TASK`` field are refused unless ``force``."""
    loaded = [(run, *_records(run)) for run in runs]
    first = loaded[0][1]
    for run, config, _ in loaded[1:]:
        differ = [k for k in SAME_TASK if config.get(k) != first.get(k)]
        if differ and not force:
            k = differ[0]
            raise E2TError(f"{run} trains {k} {config.get(k)}, the baseline {runs[0]} {first.get(k)}: its savings "
                           f"would not compare the same training (pass --force to compare anyway)")
    model = _model(board, model_path, first.get("board", "pynq-z2"))
    rows, notes = [], []
    for run, config, records in loaded:
        result = priced(records, model)
        wb = result["whole_board"]
        if not wb["priced"]:
            notes.append(f"note: {run}: the whole board is not priced: {wb['why']}")
        rows.append({"run": run, "epochs": records[-1].get("epoch"), "j": result["total_j"],
                     "board_s": wb.get("seconds"), "board_j": wb.get("j"), "board_why": wb.get("why"),
                     "test_acc": records[-1].get("test_acc") or 0.0,
                     "config": {k: config.get(k) for k in ("backend", "precision", "psg", "smd", "slu_target")}})
    base = rows[0]
    if len({r["epochs"] for r in rows}) > 1:
        notes.insert(0, "note: the runs trained different numbers of epochs: their joules are not of the same training")
    lines = [f"modeled energy ({model.table}; {model.path}), baseline {runs[0]}; engine: its dynamic joules "
             f"(MACs, DDR), board: the whole board (engine, host CPU, static, idle) over its modeled time", *notes,
             f"{'run':<40}{'epochs':>7}{'test acc':>11}{'engine (J)':>12}{'saved':>9}{'board (s)':>11}"
             f"{'board (J)':>12}{'saved':>9}{'d acc':>9}"]
    for r in rows:
        r["saved"] = 1 - r["j"] / base["j"] if base["j"] else 0.0
        r["board_saved"] = (1 - r["board_j"] / base["board_j"] if base["board_j"] else 0.0) \
            if r["board_j"] is not None and base["board_j"] is not None else None
        r["d_acc"] = r["test_acc"] - base["test_acc"]
        board = (f"{r['board_s']:>11.4g}{r['board_j']:>12.4g}" if r["board_j"] is not None else f"{'-':>11}{'-':>12}") \
            + (f"{100 * r['board_saved']:>8.1f}%" if r["board_saved"] is not None else f"{'-':>9}")
        lines.append(f"{os.path.basename(os.path.normpath(r['run'])):<40}{r['epochs']!s:>7}{100 * r['test_acc']:>9.2f} %"
                     f"{r['j']:>12.4g}{100 * r['saved']:>8.1f}%{board}{100 * r['d_acc']:>+8.2f}")
    lines.append("not modeled: " + "; ".join(model.not_modeled))
    return "\n".join(lines), {"kind": "modeled", "model": model.path, "table": model.table,
                              "sources": model.sources, "rows": rows}
