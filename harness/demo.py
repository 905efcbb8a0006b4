"""`harness demo`: the whole pipeline offline on an embedded default.

Builds a small CUB-200-2011-layout dataset with drawn images, a FOCI-format choice file and a tiny
random Idefics2 checkpoint under $HARNESS_HOME/demo (reused on later runs), then runs `harness run`
with both scorings and prints the table. The accuracies are those of an untrained tiny model:
the demo shows the machinery, not a result.
"""

from __future__ import annotations

from harness.cli import format_table, summary_line
from harness.config import RunConfig
from harness.core.output import emit_json
from harness.core.paths import harness_home
from harness.runner import run_evaluation

DEMO_CLASSES = 6
DEMO_TEST_PER_CLASS = 4


def prepare_demo_inputs():
    from models.fixtures.tiny_models import build_tiny_model
    from tasks.fixtures.datasets import make_choice_file, make_cub

    root = harness_home() / "demo"
    checkpoint = build_tiny_model("idefics2", root / "tiny-idefics2", seed=0)
    cub = make_cub(root / "data", n_classes=DEMO_CLASSES, per_class_test=DEMO_TEST_PER_CLASS, seed=0)
    choices = make_choice_file("bird200", cub, root / "bird-200-choices.json", k=4, seed=0)
    return checkpoint, cub, choices, root / "runs"


def run_demo(limit: int | None = None, json_output: bool = False) -> int:
    checkpoint, cub, choices, runs = prepare_demo_inputs()
    print(f"demo inputs: checkpoint {checkpoint}\n             data {cub}\n             choices {choices}")
    summaries = []
    for scoring in ("generate", "loglik"):
        config = RunConfig(
            model="idefics2",
            task="bird200",
            model_args={"pretrained": str(checkpoint), "dtype": "float32", "device": "cpu"},
            data_root=cub,
            choices=choices,
            scoring=scoring,
            limit=limit,
            batch_size=4,
            output_dir=runs,
        )
        summaries.append(run_evaluation(config, command=["harness", "demo"]))
    print()
    print(format_table(summaries))
    for summary in summaries:
        print(f"{summary['scoring']:<9} results: {summary['results_file']}")
    print(
        "(the tiny model is random and untrained: it answers with noise, so generation is mostly unparseable "
        "and log-likelihood accuracy is near chance; the demo shows the pipeline, not a model)"
    )
    if json_output:
        emit_json([summary_line(s) for s in summaries])
    return 0


# ---------------------------------------------------------------- harness demo --train

TRAIN_DEMO_CLASSES = 8


def run_train_demo(json_output: bool = False) -> int:
    """Trains a tiny Finedefics (both stages, the tiny_cpu config) from the demo's tiny Idefics2 on
    synthetic data and prints held-out accuracy before and after, through `harness run`'s runner."""
    import shutil

    from finedefics_train.config import load_config
    from finedefics_train.evaluate import adapter_run_config, evaluate_adapter
    from finedefics_train.fixtures import build_training_base, make_training_data
    from finedefics_train.recipes import get_recipe
    from finedefics_train.trainer import StageRun, start_after, train_stage

    root = harness_home() / "demo" / "train"
    data = make_training_data(
        root / "synthetic", n_classes=TRAIN_DEMO_CLASSES, per_class_train=12, per_class_test=4
    )
    base = build_training_base(harness_home() / "demo" / "tiny-idefics2-train")
    print(f"train demo: base {base} (the demo's tiny Idefics2, output layer scaled)\n"
          f"            data {data.data_dir} ({TRAIN_DEMO_CLASSES} classes; held-out test images in {data.dataset})")  # fmt: skip
    shutil.rmtree(root / "adapter", ignore_errors=True)
    runs = root / "runs"
    before = [run_evaluation(config, command=["harness", "demo", "--train"]) for config in demo_eval_configs(
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
        command=["harness", "demo", "--train"])  # fmt: skip
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
