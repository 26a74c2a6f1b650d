"""benchmarks/gpu_check.py on a bare image, and the shipped space files under `sla-nas validate`.

GPU machines are often images with PyTorch and little else: gpu_check's model, step-time and
trainer part must run where Ray, Optuna, pandas and plotly cannot be imported, and its search
part must then say that it was skipped and why. The subprocess below makes those imports fail
(None in ``sys.modules``) and runs the script at its tiny size, eager only.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sla_nas.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
BLOCKED = ("ray", "optuna", "pandas", "plotly")

# None in sys.modules: ``import ray`` raises ModuleNotFoundError and importlib.util.find_spec
# says None, as where the package is not installed (torch._dynamo asks find_spec)
BARE = f"""
import runpy, sys

sys.modules.update(dict.fromkeys({BLOCKED!r}))
sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]
runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
"""


def run_bare(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BARE, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_bare_image_runs_the_torch_part_and_skips_the_search(tmp_path):
    out = tmp_path / "check.json"
    proc = run_bare("--device", "cpu", "--size", "tiny", "--no-compile", "--threads", "1",
                    "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("gpu_check: on the CPU (--device cpu): running the same steps")
    passed = [line for line in lines if line.startswith("PASS  ")]
    names = " | ".join(line[6:48].strip() for line in passed)
    assert "plain GPT = vanilla's function" in names
    assert "bf16 step = fp32 step, vanilla" in names
    assert "train_proxy trains in bf16" in names
    assert not [line for line in lines if line.startswith("FAIL  ")], proc.stdout
    assert any(line.startswith("----  vanilla vs SDPA GPT") and "no target on CPU" in line
               for line in lines)
    assert any(line.startswith("search skipped: Ray is not installed") for line in lines)
    assert "0 FAIL" in lines[-1]
    data = json.loads(out.read_text())
    assert data["search"] == {"skipped": "Ray is not installed"}
    models = {(r["name"], r["precision"]) for r in data["steps"]}
    assert len(models) == 10 and all(not r["compiled"] for r in data["steps"])


def test_blocked_imports_really_fail():
    proc = subprocess.run([sys.executable, "-c", BARE.replace(
        "runpy.run_path", "import ray  # noqa\nrunpy.run_path")], capture_output=True, text=True,
        timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and "ModuleNotFoundError: import of ray halted" in proc.stderr


def test_help_explains_the_check():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0
    for flag in ("--device", "--quick", "--skip-search", "--json", "--size", "--no-compile"):
        assert flag in proc.stdout


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_validates(path, capsys, tmp_path):
    import numpy as np
    import yaml

    task = yaml.safe_load(path.read_text()).get("task") or {}
    if task.get("name") == "tokens":  # validate opens the task's files, as search does:
        # small ones at the paths the space names, beside a copy of it
        (tmp_path / "spaces").mkdir()
        path = Path(shutil.copy(path, tmp_path / "spaces"))
        for name in ("train", "val"):
            target = (path.parent / task[name]).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            (np.arange(200_000) % 256).astype(np.uint16).tofile(target)
    assert main(["validate", str(path)]) == 0, capsys.readouterr().out


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_sharing_is_read_from_what_each_trial_recorded():
    """Two trials on GPU 0 of one node overlap: shared; GPU 1, another node's GPU 0 and a later
    trial on GPU 0 do not add to it."""
    most_at_once = load_gpu_check().most_at_once
    rows = [{"gpu_ids": ["0"], "node": "a", "start": 0.0, "end": 10.0},
            {"gpu_ids": ["0"], "node": "a", "start": 1.0, "end": 5.0},
            {"gpu_ids": ["1"], "node": "a", "start": 2.0, "end": 3.0},
            {"gpu_ids": ["0"], "node": "b", "start": 2.0, "end": 4.0},
            {"gpu_ids": ["0"], "node": "a", "start": 10.0, "end": 12.0}]
    assert most_at_once(rows) == 2
    assert most_at_once(rows, per_gpu=False) == 4
    assert most_at_once([dict(r, gpu_ids=[]) for r in rows]) == 0
    assert most_at_once([rows[0], rows[4]]) == 1
