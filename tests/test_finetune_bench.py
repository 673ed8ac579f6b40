"""bench/finetune.py end to end in its quick mode: pretrain, export, fine-tune with a new head on a
class split, the table, the JSON and the choice computed from them."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench", "finetune.py")


def test_quick_finetune_bench_writes_the_table_and_the_choice(tmp_path):
    out = tmp_path / "finetune"
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--finetune-classes", "4-7", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(out / "finetune.json") as f:
        result = json.load(f)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["full", "full+e2train", "fc", "fc+e2train"]
    assert result["finetune_data"]["classes"] == 4 and "new head, 10 -> 4 classes" in proc.stdout
    assert result["pretrain"]["config"]["backend"] == "torch" and os.path.exists(out / "plan" / "plan.json")
    for name, r in rows.items():
        cfg = r["config"]
        assert cfg["backend"] == "emu" and cfg["init"] == result["pretrain"]["plan"] and cfg["lr"] == 0.001
        assert (cfg["train_from"] == "fc") == name.startswith("fc") and cfg["train"] == "all"
        assert (cfg["psg"] and cfg["psg_tau"] == 0.0 and cfg["smd"] == 0.5) == name.endswith("+e2train")
        with open(out / name / "energy" / "energy.json") as f:
            wb = json.load(f)["whole_board"]
        assert (r["board_j"], r["board_seconds"]) == (wb["j"], wb["seconds"]) and r["board_j"] > 0
        assert 0 <= r["init_test_acc"] <= 1 and 0 <= r["test_acc"] <= 1
    for saves in ("", "+e2train"):  # the same start (network and fresh head); the classifier alone costs less
        full, fc = rows["full" + saves], rows["fc" + saves]
        assert fc["init_test_acc"] == full["init_test_acc"]
        assert fc["macs"] < full["macs"] and fc["bytes"] < full["bytes"] and fc["board_j"] < full["board_j"]
    for what in ("full", "fc"):  # E2-Train's savings cut every count
        assert rows[what + "+e2train"]["macs"] < rows[what]["macs"]
        assert rows[what + "+e2train"]["board_j"] < rows[what]["board_j"]
    near = [r for r in result["rows"] if 100 * (rows["full"]["test_acc"] - r["test_acc"]) <= 2]
    assert result["choice"]["pick"] == min(near, key=lambda r: r["board_j"])["name"]
    assert result["table"] in proc.stdout and result["advice"] in proc.stdout
    assert result["advice"].startswith("choose ")


def test_classes_outside_the_data_set_stop_before_any_work(tmp_path):
    out = tmp_path / "finetune"
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--finetune-classes", "8-11", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "classes [8, 9, 10, 11] of digits" in proc.stderr.splitlines()[-1]
    assert not out.exists() and proc.stdout == ""
