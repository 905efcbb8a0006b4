"""One rank of a data-parallel lmms-eval run of a wrapper; started by test_models_distributed.py through
torch's elastic launcher (torchrun). Rank 0 writes what lmms-eval gathered to the output file."""

from __future__ import annotations

import json
import sys


def main(model: str, pretrained: str, include_path: str, out: str, *tasks: str) -> None:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from models import distributed
    from models.registry import get_model_spec

    lm = (
        get_model_spec(model)
        .load_wrapper()
        .create_from_arg_string(f"pretrained={pretrained},device=cpu,dtype=float32", {"batch_size": 2})
    )
    results = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        batch_size=2,
        log_samples=True,
        bootstrap_iters=0,
        task_manager=TaskManager(include_path=include_path, include_defaults=False),
        process_docs_parallel=1,
    )
    if distributed.is_main_process():
        report = {
            task: {
                "world_size": lm.world_size,
                "n": len(results["samples"][task]),
                "accuracy": results["results"][task]["accuracy,none"],
                "samples": sorted([sample["doc_id"], sample["resps"]] for sample in results["samples"][task]),
            }
            for task in tasks
        }
        with open(out, "w") as handle:
            json.dump(report, handle, default=list)


if __name__ == "__main__":
    main(*sys.argv[1:])
