"""`harness train demo`: a tiny Finedefics trained offline (both stages of the recipe, the tiny_cpu
config) from the demo's tiny Idefics2 on synthetic data, with held-out accuracy before and after,
evaluated through `harness run`'s runner. The training side of `harness demo`."""

from __future__ import annotations

import argparse
import shutil

from harness.config import RunConfig
from harness.core.output import JSON_HELP, emit_json
from harness.core.paths import harness_home
from harness.report import format_table, summary_line

COMMAND = ["harness", "train", "demo"]


def register(stages: argparse._SubParsersAction) -> None:
    demo = stages.add_parser(
        "demo", help="train a tiny Finedefics on synthetic data and show held-out accuracy before and after"
    )
    demo.add_argument("--json", action="store_true", help=JSON_HELP)
    demo.set_defaults(func=lambda args: run_train_demo(json_output=args.json))


TRAIN_DEMO_CLASSES = 8


def run_train_demo(json_output: bool = False) -> int:
    """Trains a tiny Finedefics (both stages, the tiny_cpu config) from the demo's tiny Idefics2 on
    synthetic data and prints held-out accuracy before and after, through `harness run`'s runner."""
    from finedefics_train.config import load_config
    from finedefics_train.evaluate import adapter_run_config, evaluate_adapter
    from finedefics_train.fixtures import build_training_base, make_training_data
    from finedefics_train.recipes import get_recipe
    from finedefics_train.trainer import StageRun, start_after, train_stage
    from harness.runner import run_evaluation

    root = harness_home() / "demo" / "train"
    data = make_training_data(
        root / "synthetic", n_classes=TRAIN_DEMO_CLASSES, per_class_train=12, per_class_test=4
    )
    base = build_training_base(harness_home() / "demo" / "tiny-idefics2-train")
    print(f"train demo: base {base} (the demo's tiny Idefics2, output layer scaled)\n"
          f"            data {data.data_dir} ({TRAIN_DEMO_CLASSES} classes; held-out test images in {data.dataset})")  # fmt: skip
    shutil.rmtree(root / "adapter", ignore_errors=True)
    runs = root / "runs"
    before = [run_evaluation(config, command=COMMAND) for config in demo_eval_configs(
        lambda **kw: RunConfig(model="idefics2", task="bird200", data_root=data.dataset, output_dir=runs, batch_size=8,
                               model_args={"pretrained": str(base), "dtype": "float32", "device": "cpu"}, **kw))]  # fmt: skip
    config, recipe, previous = load_config("tiny_cpu"), get_recipe("finedefics"), None
    for stage in recipe.stages:
        run = StageRun(stage, data.data_dir, str(base), root / "adapter" / stage, config, recipe)
        record = train_stage(run if previous is None else start_after(run, previous))
        print(f"{stage}: {record['metrics']['global_step']} steps in {record['metrics']['wall_s']:.0f} s")
        previous = run
    after = evaluate_adapter(demo_eval_configs(
        lambda **kw: adapter_run_config(previous.out, "bird200", data.dataset, output_dir=runs, **kw)), previous.out,
        command=COMMAND)  # fmt: skip
    print()
    print(format_table([*before, *after]))
    for b, a in zip(before, after, strict=True):
        print(
            f"{a['scoring']:<11} {a['variant']:<5} held-out accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}"
        )
    if json_output:
        emit_json({"before": [summary_line(s) for s in before], "after": [summary_line(s) for s in after],
                   "adapter": str(previous.out)})  # fmt: skip
    return 0


def demo_eval_configs(make) -> list:
    """Open-set questions (the model names the class) and 4-option questions scored by name likelihood."""
    return [make(scoring="generate", variant="open"), make(scoring="loglik_name", variant="k4")]
