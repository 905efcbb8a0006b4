"""`harness run --task bird200` end to end for every native architecture and Finedefics, both scorings,
and the log-likelihood answers of the shared-prefix and naive paths agreeing on every sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from tests.model_fixtures import NATIVE, RUN_ARGS, SLOW_RUNS, tiny_checkpoint

NAMES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_RUNS else name for name in NATIVE]
SCORINGS = ("generate", "loglik")
# The default run: `harness run` once per model, the scorings taking turns (each wrapper's generation and
# both scoring paths are checked in tests/test_models_native.py). Idefics2's two runs are
# tests/test_cli_run.py::test_run_end_to_end's (the same command, more assertions): slow suite here.
DEFAULT_RUNS = {(name, SCORINGS[i % 2]) for i, name in enumerate(NATIVE) if name != "idefics2"}
# `shared_prefix=false` through `harness run`: a decoder-only and an encoder-decoder model by default; every
# architecture's shared-prefix and naive scores agree in tests/test_models_native.py
SHARED_VS_NAIVE = ("idefics2", "blip2_flant5")
SLOW_CASES = {
    *(f"test_harness_run_bird200[{name}-{scoring}]" for name in NATIVE for scoring in SCORINGS
      if (name, scoring) not in DEFAULT_RUNS),
    *(f"test_shared_prefix_and_naive_runs_give_the_same_scores[{name}]" for name in NATIVE
      if name not in SHARED_VS_NAIVE),
}  # fmt: skip


def _run(capsys, tmp_path, name, pretrained, cub_root, cub_choices, scoring, *model_args):
    model_args = ("device=cpu", "dtype=float32", *RUN_ARGS.get(name, ()), *model_args)
    args = [
        "run",
        "--model",
        name,
        "--task",
        "bird200",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--model-args",
        ",".join([f"pretrained={pretrained}", *model_args]),
        "--scoring",
        scoring,
        "--batch-size",
        "2",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _questions(choices) -> int:
    return sum(len(entries) for entries in json.loads(Path(choices).read_text()).values())


def _nlls(line) -> list[list[float]]:
    rows = sorted((json.loads(row) for row in open(line["samples_file"])), key=lambda s: s["doc_id"])
    return [[float(r[0][0] if isinstance(r[0], list) else r[0]) for r in row["resps"]] for row in rows]


@pytest.mark.parametrize("scoring", SCORINGS)
@pytest.mark.parametrize("name", NAMES)
def test_harness_run_bird200(capsys, tmp_path, name, scoring, cub_root, cub_choices):
    line = _run(capsys, tmp_path, name, tiny_checkpoint(name), cub_root, cub_choices, scoring)
    assert line["model"] == name and line["scoring"] == scoring and line["n"] == _questions(cub_choices)
    assert 0.0 <= line["accuracy"] <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_shared_prefix_and_naive_runs_give_the_same_scores(capsys, tmp_path, name, cub_root, cub_choices):
    path = tiny_checkpoint(name)
    shared = _run(capsys, tmp_path / "shared", name, path, cub_root, cub_choices, "loglik_name")
    naive = _run(
        capsys, tmp_path / "naive", name, path, cub_root, cub_choices, "loglik_name", "shared_prefix=false"
    )
    assert shared["accuracy"] == naive["accuracy"]
    for a, b in zip(_nlls(shared), _nlls(naive)):
        assert a == pytest.approx(b, abs=1e-4)
