"""Stage I training-step cost on the tiny Idefics2 (CPU): every text of a batch in ONE padded forward
against one forward per text, samples/s, peak memory, and the per-sample token accounting that the
README scales to the paper's 8B setting.

    python benchmarks/bench_train.py [--batch 16] [--repeats 3] [--processes 1 2]

A step is the full Stage I objective (OAC + ACC + CCC + L_gen, 3 hard negatives per sample): forward
and backward through the LoRA-wrapped tiny model. `--processes`: `harness train run --recipe
finedefics` (Stage I then Stage II, global batch 8, 4 steps each) in 1 and in N data-parallel processes
(accelerate's launcher), with each stage's samples/s and peak memory from the adapter records.
Writes benchmarks/out/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

OUT = Path(__file__).resolve().parent / "out"


def build(work: Path, batch: int):
    from transformers import AutoProcessor, Idefics2ForConditionalGeneration

    from finedefics_train.arch import ADAPTERS
    from finedefics_train.config import load_config
    from finedefics_train.fixtures import build_training_base, make_training_data
    from finedefics_train.model import FinedeficsTrainingModel, stage_losses
    from finedefics_train.trainer import wrap_lora
    from finedefics_train.training_data import SequenceBuilder, StageOneCollator, load_stage

    data = make_training_data(
        work / "data", n_classes=8, per_class_train=max(2, batch // 8 + 1), per_class_test=1
    )
    base = build_training_base(work / "base")
    config = load_config("tiny_cpu")
    adapter = ADAPTERS["idefics2"]
    processor = AutoProcessor.from_pretrained(base)
    peft = wrap_lora(Idefics2ForConditionalGeneration.from_pretrained(base), adapter, config, None)
    model = FinedeficsTrainingModel(peft, adapter, stage_losses("stage1", config.loss.loss_options()),
                                    processor.tokenizer.eos_token_id).train()  # fmt: skip
    rows = load_stage(data.data_dir, "stage1").shuffle(seed=0).select(range(batch))
    return model, StageOneCollator(SequenceBuilder(processor, adapter))([rows[i] for i in range(batch)])


def one_forward_per_text(adapter, model, input_ids, lengths):
    """The naive path: each text through the language model on its own."""
    import torch

    from finedefics_train.arch import last_token_states

    states = []
    for ids, length in zip(input_ids, lengths, strict=True):
        embeds = model.get_input_embeddings()(ids[None, : int(length)])
        states.append(last_token_states(adapter.language_model(model), embeds, length[None]))
    return torch.cat(states)


def step_seconds(model, batch, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        model(**batch)["loss"].backward()
        best = min(best, time.perf_counter() - started)
    return best


def token_accounting(batch: dict, image_token_id: int) -> dict:
    """Language-model tokens per sample, by sequence kind."""
    n = int(batch["category_labels"].shape[0])
    visual = int((batch["input_ids"] == image_token_id).sum()) // n
    return {
        "image_sequence": visual + 1,
        "generation_sequence": float(batch["attention_mask"].sum()) / n,
        "texts_per_sample": int(batch["text_ids"].shape[0]) // n,
        "text_tokens": float(batch["text_lengths"].sum()) / n,
        "padded_text_tokens": float(batch["text_ids"].numel()) / n,
    }


def data_parallel_runs(work: Path, processes: list[int]) -> dict:
    """Each stage's samples/s and peak memory (the largest of any process) for each process count."""
    import subprocess
    import sys

    from finedefics_train.fixtures import build_training_base, make_training_data
    from harness import launch

    data = make_training_data(work / "dp-data", n_classes=4, per_class_train=8, per_class_test=1)
    base = build_training_base(work / "base")
    results = {}
    for n in processes:
        stage = {"max_steps": 4, "warmup_steps": 0, "global_batch_size": 8, "per_device_batch_size": 8 // n,
                 "seed": 0, "save_steps": 100, "logging_steps": 1}  # fmt: skip
        config = work / f"dp{n}.yaml"
        config.write_text(json.dumps({"model": {"load_in_4bit": False, "dtype": "float32", "lora_dropout": 0.0},
                                      "stage1": stage, "stage2": stage}))  # fmt: skip
        out = work / f"dp{n}"
        argv = ["train", "run", "--data", str(data.data_dir), "--base", str(base), "--out", str(out),
                "--config", str(config), "--recipe", "finedefics", "--quiet"]  # fmt: skip
        if n == 1:
            code = subprocess.run([sys.executable, "-m", "harness.cli", *argv]).returncode
        else:
            code = launch.launch(argv, n)
        if code:
            raise SystemExit(f"{n} processes: exit code {code}")
        results[str(n)] = {
            stage: {key: record["metrics"][key] for key in ("train_samples_per_second", "peak_memory_mib")}
            for stage, record in (("stage1", out / "stage1"), ("stage2", out))
            for record in [json.loads((record / "finedefics_training.json").read_text())]
        }
    return results


def main(argv=None) -> int:
    import torch

    import finedefics_train.model as training_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--processes",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also train both stages in each of these numbers of processes (e.g. 1 2)",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        model, batch = build(Path(work), args.batch)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        batched = step_seconds(model, batch, args.repeats)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        batched_version = training_model.text_representations
        training_model.text_representations = one_forward_per_text
        try:
            naive = step_seconds(model, batch, args.repeats)
        finally:
            training_model.text_representations = batched_version
        parallel = data_parallel_runs(Path(work), args.processes) if args.processes else None
    result = {
        "batch": args.batch,
        "step_s_batched_texts": round(batched, 4),
        "step_s_one_forward_per_text": round(naive, 4),
        "ratio_batched_over_naive": round(batched / naive, 3),
        "samples_per_s": round(args.batch / batched, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "rss_before_steps_mib": round(rss_before / 1024, 1),
        "tokens_per_sample": token_accounting(batch, model.base.config.image_token_id),
        "data_parallel": parallel,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
