"""`benchmarks/gpu_probe.py` parses its options and runs its step section on the CPU in seconds (the GPU run is the lead's)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("gpu_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parses_and_rejects_unknown_sections(probe) -> None:
    args = probe.parse_args(["--device", "cpu", "--quick", "--sections", "steps,attacks", "--budget-s", "30"])
    assert args.sections == ["env", "steps", "attacks"] and args.budget_s == 30 and args.batch == 16
    with pytest.raises(SystemExit) as exc:
        probe.parse_args(["--sections", "steps,warp"])
    assert exc.value.code == 2


def test_step_section_on_the_cpu_writes_its_table(probe, tmp_path: Path) -> None:
    rc = probe.main(["--device", "cpu", "--quick", "--sections", "steps", "--models", "acharya", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "gpu-probe.json").read_text())["rows"]
    steps = {r["what"]: r for r in rows if r["section"] == "steps"}
    assert set(steps) == {"acharya today", "acharya fast", "acharya fast+bf16"}  # graph and cudnn rows are CUDA-only
    assert all(isinstance(r["value"], float) and r["value"] > 0 and r["unit"] == "ms/step" for r in steps.values())
    assert "| steps | acharya fast |" in (tmp_path / "gpu-probe.md").read_text()


def test_a_failing_section_costs_only_its_rows(probe, tmp_path: Path) -> None:
    rc = probe.main(["--device", "cpu", "--quick", "--sections", "steps", "--models", "no-such-model", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "gpu-probe.json").read_text())["rows"]
    assert any(r["section"] == "steps" and r["what"] == "section failed" and "no-such-model" in r["note"] for r in rows)
    assert any(r["section"] == "env" for r in rows)


def test_graph_rows_worker_reports_each_model(probe) -> None:
    """The child that times the CUDA-graph rows sends one result per model and a final None; on the CPU each
    result is the clear refusal GraphedStep gives for CPU tensors."""
    import queue

    out: queue.Queue = queue.Queue()
    probe._graph_steps_worker([("acharya", probe.entry_points("models")["acharya"])], "cpu", 8, 1, 1, out)
    name, seconds, error = out.get_nowait()
    assert name == "acharya" and seconds is None and "CUDA device" in error
    assert out.get_nowait() is None


def test_pack_section_on_the_cpu_rates_every_packable_model_against_it_alone(probe, tmp_path: Path) -> None:
    """The rows a GPU session brings back for issue 19's target: each model that packs alone, then K packed with its ratio."""
    rc = probe.main(["--device", "cpu", "--quick", "--sections", "pack", "--out", str(tmp_path)])
    assert rc == 0
    rows = {r["what"]: r for r in json.loads((tmp_path / "gpu-probe.json").read_text())["rows"] if r["section"] == "pack"}
    models = ("kachuee", "shaker", "acharya", "ecg-atk-gan")
    assert {f"{m} {w}" for m in models for w in ("alone", "K=1 packed", "K=3 packed", "K=9 packed")} <= set(rows)
    assert all(isinstance(r["value"], float) and r["value"] > 0 for r in rows.values())
    assert all(" alone" in rows[f"{m} K=9 packed"]["note"] for m in models)
    assert "batch 10 each" in rows["acharya K=3 packed"]["note"]  # its paper's batch, as fit trains it


def test_pack_graph_rows_worker_reports_each_model_and_k(probe) -> None:
    """The child that times the pack section's graph rows sends one model-alone row (k = 0) and one row per K, then
    None; on the CPU each is the clear refusal of GraphedStep / GraphedPack for CPU tensors."""
    import queue

    out: queue.Queue = queue.Queue()
    probe._pack_graph_worker([("ecg-atk-gan", probe.entry_points("models")["ecg-atk-gan"])], (1, 3), "cpu", 8, 1, 1, out)
    rows = [out.get_nowait() for _ in range(3)]
    assert [(name, k) for name, k, _, _ in rows] == [("ecg-atk-gan", 0), ("ecg-atk-gan", 1), ("ecg-atk-gan", 3)]
    assert all(s is None and "CUDA device" in err for _, _, s, err in rows)
    assert out.get_nowait() is None
