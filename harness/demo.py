"""`harness demo`: the whole pipeline offline on an embedded default.

Builds a small CUB-200-2011-layout dataset with drawn images, a FOCI-format choice file and a tiny
random Idefics2 checkpoint under $HARNESS_HOME/demo (reused on later runs), then runs `harness run`
with both scorings and prints the table. The accuracies are those of an untrained tiny model:
the demo shows the machinery, not a result.
"""

from __future__ import annotations

from harness.config import RunConfig
from harness.core.output import emit_json
from harness.core.paths import harness_home
from harness.report import format_table, summary_line
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
