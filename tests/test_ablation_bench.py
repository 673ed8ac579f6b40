"""bench/ablation.py end to end on a tiny setting: parallel single-threaded jobs, table and JSON."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ablation_runs_configs_in_parallel_and_writes_the_table(tmp_path):
    out = tmp_path / "ablation"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "ablation.py"), "--model", "resnet8", "--dataset", "digits",
         "--epochs", "1", "--jobs", "2", "--only", "smd", "smd+slu+psg", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(out / "ablation.json") as f:
        result = json.load(f)
    rows = {r["name"]: r for r in result["rows"]}
    assert [r["name"] for r in result["rows"]] == ["baseline", "smd", "smd+slu+psg"]
    base, smd, psg = rows["baseline"], rows["smd"], rows["smd+slu+psg"]
    assert base["kept_iterations"] == 1438 // 128 > smd["kept_iterations"] > 0
    assert 0 < psg["macs"] < base["macs"] and 0 <= psg["test_acc"] <= 1
    assert psg["psg_predicted_fraction"] == 1.0  # threshold 0: the predictor decides every sign
    assert psg["config"]["slu_band"] == 0.05 and psg["config"]["psg_tau"] == 0.0
    for name in rows:
        assert name in proc.stdout and os.path.exists(out / name / "metrics.jsonl")
    assert result["table"] in proc.stdout


def test_ablation_on_the_emulated_engine(tmp_path):
    out = tmp_path / "ablation"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "ablation.py"), "--model", "resnet8", "--dataset", "digits",
         "--epochs", "1", "--jobs", "2", "--only", "smd+slu+psg", "--backend", "emu", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(out / "ablation.json") as f:
        rows = {r["name"]: r for r in json.load(f)["rows"]}
    base, e2t = rows["baseline"], rows["smd+slu+psg"]
    assert base["config"]["backend"] == e2t["config"]["backend"] == "emu" and base["config"]["precision"] == "fixed"
    assert 0 < e2t["macs"] < base["macs"] and "int4x16" in e2t["macs_by_width"] and "int4x16" not in base["macs_by_width"]
    assert e2t["psg_predicted_fraction"] == 1.0 and "backend emu" in proc.stdout
