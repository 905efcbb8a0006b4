"""Scoring throughput of the wrapper on a mid-size random Idefics2 on CPU: 4-option log-likelihood
with the shared prefix against the naive per-option path, and batched greedy generation.

    python benchmarks/bench_scoring.py [--images 16] [--batch-sizes 1,4,8]

The model: 224-px images, a 6-layer SigLIP-style vision tower (width 384, 256 patches), a 64-latent
perceiver and a 4-layer Mistral-style language model (width 512), random weights, loaded through
the wrapper's normal from_pretrained path. Prints images/s per scoring and batch size and the
shared/naive time ratio (the issue asks for at most 0.4 with four options); writes
benchmarks/out/scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

OUT = Path(__file__).resolve().parent / "out"
TARGET_RATIO = 0.4


def build_model(folder: Path) -> Path:
    import torch
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2Processor,
        MistralConfig,
    )
    from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

    from models.fixtures.tokenizer import llama_tokenizer

    tokenizer = llama_tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>"], pad_token="<unk>"
    )
    images = Idefics2ImageProcessorPil(
        size={"shortest_edge": 224, "longest_edge": 224}, do_image_splitting=False
    )
    processor = Idefics2Processor(
        images, tokenizer, image_seq_len=64
    )  # no template: the wrapper's Idefics2 format
    text = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        sliding_window=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Idefics2Config(
        text_config=text,
        vision_config={
            "hidden_size": 384,
            "intermediate_size": 1536,
            "num_hidden_layers": 6,
            "num_attention_heads": 6,
            "image_size": 224,
            "patch_size": 14,
        },
        perceiver_config={
            "hidden_size": 512,
            "resampler_n_latents": 64,
            "resampler_depth": 2,
            "resampler_n_heads": 8,
            "resampler_head_dim": 64,
            "num_key_value_heads": 8,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    Idefics2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def documents(n: int) -> list[dict]:
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    docs = []
    for _ in range(n):
        image = Image.new("RGB", (224, 224), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(180), rng.randrange(180)
            draw.ellipse(
                (x, y, x + rng.randrange(20, 44), y + rng.randrange(20, 44)),
                fill=tuple(rng.randrange(256) for _ in range(3)),
            )
        docs.append({"image": image})
    return docs


def instances(kind: str, n_docs: int, second) -> list:
    from lmms_eval.api.instance import Instance

    from tasks.prompts import render_question

    question = render_question(
        "Which of these birds is shown in the image?",
        ["Laysan_Albatross", "Sooty_Albatross", "Heermann_Gull", "Black_footed_Albatross"],
    )
    seconds = second if isinstance(second, list) else [second]
    items = [(d, s) for d in range(n_docs) for s in seconds]
    return [
        Instance(
            request_type=kind,
            arguments=(question, s, lambda doc: [doc["image"]], d, "t", "test"),
            idx=i,
            metadata={"task": "t", "doc_id": d, "repeats": 1},
        )
        for i, (d, s) in enumerate(items)
    ]


def timed(call, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=2, help="best of N timings")
    args = parser.parse_args()

    import torch

    from models.idefics2 import Idefics2FGVR

    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    wrapper = Idefics2FGVR.create_from_arg_string(
        f"pretrained={build_model(work / 'idefics2-mid')},device=cpu,dtype=float32"
    )
    wrapper.task_dict = {"t": {"test": documents(args.images)}}
    n = args.images
    letters = instances("loglikelihood", n, [" A", " B", " C", " D"])
    names = instances(
        "loglikelihood",
        n,
        [" Laysan_Albatross", " Sooty_Albatross", " Heermann_Gull", " Black_footed_Albatross"],
    )
    generation = instances("generate_until", n, {"max_new_tokens": 10, "until": []})

    def loglik(requests, shared):
        def run():
            wrapper.shared_prefix = shared
            return wrapper.loglikelihood(requests)

        return run

    wrapper.batch_size_per_gpu = 1
    wrapper.loglikelihood(letters[:4])  # warm-up
    rows = []
    print(f"{'measure':<34} {'batch':>5} {'seconds':>8} {'images/s':>9}")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        wrapper.batch_size_per_gpu = batch
        measures = {
            "loglik letters, naive": loglik(letters, False),
            "loglik letters, shared prefix": loglik(letters, True),
            "loglik names, naive": loglik(names, False),
            "loglik names, shared prefix": loglik(names, True),
            "generate (at most 10 new tokens)": lambda: wrapper.generate_until(generation),
        }
        for label, call in measures.items():
            seconds = timed(call, args.repeats)
            rows.append(
                {
                    "measure": label,
                    "batch_size": batch,
                    "images": n,
                    "seconds": round(seconds, 3),
                    "images_per_s": round(n / seconds, 2),
                }
            )
            print(f"{label:<34} {batch:>5} {seconds:>8.2f} {n / seconds:>9.2f}", flush=True)

    def ratio(kind: str, batch: int) -> float:
        times = {r["measure"]: r["seconds"] for r in rows if r["batch_size"] == batch}
        return round(times[f"loglik {kind}, shared prefix"] / times[f"loglik {kind}, naive"], 3)

    ratios = {
        f"{kind}, batch {b}": ratio(kind, b)
        for kind in ("letters", "names")
        for b in sorted({r["batch_size"] for r in rows})
    }
    print("\nshared-prefix time / naive time (4 options):")
    for key, value in ratios.items():
        print(f"  {key:<20} {value:.3f}{'' if value <= TARGET_RATIO else '  (above the 0.4 target)'}")
    OUT.mkdir(exist_ok=True)
    report = {
        "model": "random Idefics2: 224 px, vision 6 x 384, perceiver 64 latents, LM 4 x 512",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
        "shared_over_naive": ratios,
        "target_ratio": TARGET_RATIO,
    }
    (OUT / "scoring.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {OUT / 'scoring.json'}")


if __name__ == "__main__":
    main()
