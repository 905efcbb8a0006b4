"""Preparation throughput: reading a CUB-layout dataset, checking its images, building options
(random, and CLIP hard negatives with a tiny CLIP) and writing the prepared task.

    python benchmarks/bench_prepare.py [--classes 50] [--per-class 20]

Prints images/s for each stage and writes benchmarks/out/prepare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def timed(label: str, n: int | None, fn, rows: list):
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    n = len(value.items) if n is None else n
    rows.append(
        {"stage": label, "images": n, "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 1)}
    )
    print(f"{label:<38} {n:>6} images {seconds:>8.2f} s {n / seconds:>9.1f} img/s")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()

    from tasks.fixtures.datasets import make_cub
    from tasks.fixtures.tiny_clip import build_tiny_clip

    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    os.environ["HARNESS_HOME"] = str(work / "home")
    from tasks.clip_miner import ChoiceMiner, load_encoder
    from tasks.datasets.cub import read_cub
    from tasks.options import random_negative_questions
    from tasks.prepare import OptionPlan, check_images, prepare_task
    from tasks.registry import get_task

    root = make_cub(work / "cub", n_classes=args.classes, per_class_test=args.per_class, seed=0)
    clip = build_tiny_clip(work / "tiny-clip")
    rows: list[dict] = []
    split = timed("read CUB layout (index files)", None, lambda: read_cub(root), rows)
    n = len(split.items)
    timed("decode-check every image", n, lambda: check_images(split, skip_missing=False), rows)
    timed("random options (k=4)", n, lambda: random_negative_questions(split, 4, 0), rows)
    encoder = load_encoder(f"hf:{clip}")
    timed(
        "CLIP options, cold cache (k=4)",
        n,
        lambda: ChoiceMiner(encoder, cache_dir=work / "clip").mine(split, 4),
        rows,
    )
    timed(
        "CLIP options, warm cache (k=4)",
        n,
        lambda: ChoiceMiner(encoder, cache_dir=work / "clip").mine(split, 4),
        rows,
    )
    task = get_task("bird200")
    timed(
        "prepare_task end to end (random)",
        n,
        lambda: prepare_task(task, split, OptionPlan("random", k=4)),
        rows,
    )
    timed(
        "prepare_task cached (fingerprint hit)",
        n,
        lambda: prepare_task(task, split, OptionPlan("random", k=4)),
        rows,
    )

    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "prepare.json").write_text(
        json.dumps({"args": vars(args), "cpu_count": os.cpu_count(), "stages": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
