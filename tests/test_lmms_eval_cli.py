"""lmms-eval's own CLI runs a prepared task with our registered wrapper (entry point `idefics2_fgvr`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main


@pytest.mark.subprocess
def test_lmms_eval_cli_runs_the_prepared_task(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices):
    assert main(["prepare", "bird200", "--source", str(cub_root), "--choices", str(cub_choices), "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert prepared["n_questions"] == sum(len(v) for v in json.loads(cub_choices.read_text()).values())

    lmms_eval = shutil.which("lmms-eval", path=str(Path(sys.executable).parent)) or "lmms-eval"
    out_dir = tmp_path / "lmms-out"
    command = [
        lmms_eval, "eval", "--model", "idefics2_fgvr", "--model_args", f"pretrained={tiny_idefics2},device=cpu",
        "--include_path", prepared["include_path"], "--tasks", prepared["lmms_tasks"]["loglik"],
        "--output_path", str(out_dir), "--log_samples", "--limit", "4", "--batch_size", "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    results = list(out_dir.rglob("*_results.json"))
    assert results, f"no results file under {out_dir}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    data = json.loads(results[0].read_text())
    task = prepared["lmms_tasks"]["loglik"]
    assert 0.0 <= data["results"][task]["accuracy,none"] <= 1.0
    samples = list(out_dir.rglob(f"*_samples_{task}.jsonl"))
    assert samples and len(samples[0].read_text().splitlines()) == 4


@pytest.mark.parametrize("name", ["idefics2_fgvr"])
def test_entry_point_registers_the_wrapper(name):
    from lmms_eval.models import get_model

    from models.idefics2 import Idefics2FGVR

    assert get_model(name) is Idefics2FGVR
