"""The harness's own cost per question: the full `harness run` path (planning with a warm prepared
task, lmms-eval's request building and filters, our hooks, image decoding and the processor, the
response journal, the summary and the run files) with a wrapper that answers instantly.

    python benchmarks/bench_overhead.py [--questions 200] [--scoring loglik] [--batch-size 8]
                                        [--model-ms 0] [--profile 25] [--profile-file F]
                                        [--num-workers 0 1 2 4] [--start-method spawn]

The wrapper (`InstantIdefics2`, benchmark-only, registered here, not in models/registry.py) is the
Idefics2 wrapper on a tiny random checkpoint with the model's forward pass replaced: prompts are
built and every batch goes through the real processor, then the answer is returned at once (or after
`--model-ms` milliseconds per question, a stand-in for GPU time, to show that image loading and
preprocessing overlap with it). Images are 500x375 JPEGs, CUB's typical size. Prints questions/s, the
wall milliseconds per question, the main process's CPU milliseconds per question and the harness's own (wall minus the simulated model time), both
with the startup (planning, which reads the dataset's index files and finds the prepared task in
its cache, and the model load) and lmms-eval's teardown (a garbage collection) set aside, the prefetch thread's
image loading + preprocessing per question (overlapped with the model), and the top cProfile entries
by cumulative time; writes benchmarks/out/overhead_<scoring>.json.

`main_cpu_breakdown_ms` splits the main process's CPU time into our wrapper, the response journal,
lmms-eval's own bookkeeping and our run files (with the automatic garbage collections and the kernel
time, which lie inside those), and again by thread: `main_thread`, then `thread:<what it runs>` for
each other Python thread of the process (`thread:_worker`: the prefetch thread without workers, and
transformers' loading threads; `thread:Queue._feed`: multiprocessing's feeder threads, which pickle
the jobs sent to the workers), and `native_threads` for the rest. A cProfile sees only the thread
that enabled it: with `--profile` every other thread is profiled too and printed on its own
(`--profile-file F` writes F and F.threads), and `--profile-cpu` profiles CPU time (time.thread_time)
instead of the wall clock, which counts waiting on the workers. `--start-method spawn` starts the
workers by spawning (default: fork where possible).
`--num-workers 0 1 2 4` runs once per count of DataLoader worker processes (`harness run
--num-workers`; 0: the prefetch thread) and reports images/s (one image per question) for each; the
profile is then left out (cProfile sees only the main process).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.idefics2 import Idefics2FGVR  # noqa: E402
from models.scoring import CausalScorer  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
NAME = "bench_instant"
IMAGE_SIZE = (500, 375)


class InstantScorer(CausalScorer):
    """Runs the processor on every batch, then scores option i as -i (option A always wins)."""

    def shared(self, groups):
        w = self.wrapper
        w.encode([w.prompt_for(g.context, len(g.images)) for g in groups], [g.images for g in groups])
        w.simulate_compute(len(groups))
        return [[(-float(i), i == 0) for i in range(len(g.continuations))] for g in groups]


class InstantIdefics2(Idefics2FGVR):
    """The Idefics2 wrapper without its model's forward pass (benchmark only)."""

    scorer_class = InstantScorer
    model_seconds = 0.0  # per question, set by the benchmark

    def simulate_compute(self, n: int) -> None:
        if self.model_seconds:
            time.sleep(self.model_seconds * n)

    def generate_batch(self, batch):
        self.generation_inputs(batch)
        self.simulate_compute(len(batch))
        return ["A"] * len(batch)


def register() -> None:
    from models import registry

    registry.MODELS[NAME] = replace(
        registry.MODELS["idefics2"],
        name=NAME,
        display_name="Instant (benchmark)",
        wrapper=f"{__name__}:InstantIdefics2",
    )


def build_inputs(root: Path, questions: int) -> tuple[Path, Path, Path]:
    from PIL import Image

    from models.fixtures.tiny_models import build_tiny_model
    from tasks.fixtures.datasets import make_choice_file, make_cub

    n_classes = 50
    cub = make_cub(
        root / "data", n_classes=n_classes, per_class_test=-(-questions // n_classes), per_class_train=0
    )
    for path in (cub / "images").rglob("*.jpg"):  # CUB-sized JPEGs, so decoding costs what it would
        Image.open(path).convert("RGB").resize(IMAGE_SIZE).save(path, "JPEG", quality=90)
    choices = make_choice_file("bird200", cub, root / "bird-200.json", k=4, seed=0)
    return cub, choices, build_tiny_model("idefics2", root / "tiny-idefics2", seed=0)


def timed(owner: type, name: str, seconds: list[float], cpu: list[float] | None = None):
    """Wraps owner.name so that each call's wall time is appended to `seconds` (and this process's CPU
    time to `cpu`); returns the original."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)
            if cpu is not None:
                cpu.append(time.process_time() - start_cpu)

    setattr(owner, name, wrapper)
    return original


class ThreadClock:
    """The CPU time of every Python thread of this process other than the main one (the prefetch thread,
    multiprocessing's queue feeders, ...), by what it runs, measured with time.thread_time() at the end
    of each thread's run; with `profiler`, each such thread is also profiled and its statistics added
    to `profiles`. Threads still running when the clock stops are measured from the stop
    (/proc/self/task) where the platform has it."""

    def __init__(self, profile: bool = False, timer: Callable[[], float] = time.perf_counter):
        self.cpu: dict[str, float] = {}
        self.profiles: list[cProfile.Profile] = []
        self._profile, self._timer = profile, timer
        self._original = threading.Thread.run
        self._lock = threading.Lock()

    @staticmethod
    def kind(thread: threading.Thread) -> str:
        target = getattr(thread, "_target", None)
        if target is not None:
            return getattr(target, "__qualname__", repr(target))
        return type(thread).__qualname__

    def __enter__(self) -> ThreadClock:
        clock, original = self, self._original

        def run(thread: threading.Thread) -> None:
            key = clock.kind(thread)  # before the run, which drops the thread's target
            profiler = cProfile.Profile(clock._timer) if clock._profile else None
            start = time.thread_time()
            if profiler:
                profiler.enable()
            try:
                original(thread)
            finally:
                if profiler:
                    profiler.disable()
                with clock._lock:
                    clock.cpu[key] = clock.cpu.get(key, 0.0) + time.thread_time() - start
                    if profiler:
                        clock.profiles.append(profiler)

        threading.Thread.run = run
        return self

    def __exit__(self, *exc) -> None:
        threading.Thread.run = self._original


def run_once(config, clock: ThreadClock | None = None) -> tuple[dict, dict[str, float], dict[str, float]]:
    """One `harness run`; the wall time, and the model load, lmms-eval's teardown and the prefetch
    thread's image loading + preprocessing inside it; and this process's CPU time by part."""
    import gc

    import lmms_eval.evaluator

    import harness.journal
    import harness.runner
    import models.base

    parts = ("planning", "model_load", "teardown", "preprocessing", "lmms_eval", "wrapper", "journal")
    seconds: dict[str, list[float]] = {part: [] for part in parts}
    cpu: dict[str, list[float]] = {part: [] for part in parts}
    patched = [
        (harness.runner, "plan_run", "planning"),
        (InstantIdefics2, "__init__", "model_load"),
        (InstantIdefics2, "clean", "teardown"),
        (lmms_eval.evaluator, "simple_evaluate", "lmms_eval"),
        (InstantIdefics2, "loglikelihood", "wrapper"),
        (InstantIdefics2, "generate_until", "wrapper"),
        (harness.journal, "request_key", "journal"),
        (harness.journal.ResponseJournal, "_append", "journal"),
    ]
    if hasattr(models.base, "EncodingPrefetcher"):  # absent before the prefetcher (for before/after figures)
        patched.append((models.base.EncodingPrefetcher, "_prepare", "preprocessing"))
    originals = [(owner, name, timed(owner, name, seconds[part], cpu[part])) for owner, name, part in patched]
    # garbage collections while lmms-eval and the wrapper answer (from simple_evaluate to the teardown)
    collections: list[float] = []
    started: list[float] = []
    answering = [False]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.process_time())
        elif started:
            elapsed = time.process_time() - started.pop()
            if answering[0]:
                collections.append(elapsed)

    def flag(owner: type, name: str, value: bool):
        original = getattr(owner, name)

        def flagged(*args, **kwargs):
            answering[0] = value
            return original(*args, **kwargs)

        setattr(owner, name, flagged)
        originals.append((owner, name, original))

    flag(lmms_eval.evaluator, "simple_evaluate", True)
    flag(InstantIdefics2, "clean", False)
    gc.callbacks.append(on_gc)
    clock = clock or ThreadClock()
    try:
        with clock:
            start, start_cpu, start_times = time.perf_counter(), time.process_time(), os.times()
            start_main = time.thread_time()
            summary = harness.runner.run_evaluation(config, command=["bench_overhead"])
            total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            main_thread = time.thread_time() - start_main
            system = os.times().system - start_times.system
    finally:
        gc.callbacks.remove(on_gc)
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)
    spent = {part: sum(values) for part, values in cpu.items()}
    # this process's CPU time (all its threads, not worker processes) with startup and teardown aside
    main_cpu = total_cpu - spent["planning"] - spent["model_load"] - spent["teardown"]
    breakdown = {
        "wrapper": spent["wrapper"],  # our batching, prefetch and the stand-in model's processor calls
        "journal": spent["journal"],  # response keys and appends
        # lmms-eval's requests, filters, per-document results and metrics (its teardown aside)
        "lmms_eval": spent["lmms_eval"] - spent["wrapper"] - spent["journal"] - spent["teardown"],
        "run_files": main_cpu - (spent["lmms_eval"] - spent["teardown"]),  # summary, files (ours)
        "gc": sum(collections),  # automatic collections, counted inside the parts above
        "system": system,  # kernel time of the whole run (startup and teardown included), inside the parts
        # by thread: the main thread (startup and teardown aside), then each other thread's kind; what the
        # process spent beyond these was in threads Python did not start (native) or still running
        "main_thread": main_thread - spent["planning"] - spent["model_load"] - spent["teardown"],
        **{f"thread:{kind}": value for kind, value in sorted(clock.cpu.items())},
    }
    breakdown["native_threads"] = total_cpu - main_thread - sum(clock.cpu.values())
    return (
        summary,
        {"total": total, "main_cpu": main_cpu, **{part: sum(values) for part, values in seconds.items()}},
        breakdown,
    )


def measured(
    args, workers: int, summary: dict, seconds: dict[str, float], breakdown: dict[str, float]
) -> dict:
    n = summary["n"]
    # startup (planning with a warm prepared task, the model load) and lmms-eval's teardown aside
    per_run = seconds["total"] - seconds["planning"] - seconds["model_load"] - seconds["teardown"]
    return {
        "questions": n,
        "scoring": args.scoring,
        "batch_size": args.batch_size,
        "num_workers": workers,
        "model_ms_per_question": args.model_ms,
        "total_s": round(seconds["total"], 3),
        "planning_s": round(seconds["planning"], 3),
        "model_load_s": round(seconds["model_load"], 3),
        "teardown_s": round(seconds["teardown"], 3),
        "questions_per_s": round(n / per_run, 1),
        "images_per_s": round(n / per_run, 1),  # one image per question
        "wall_ms_per_question": round(1000 * per_run / n, 2),
        "harness_ms_per_question": round(1000 * per_run / n - args.model_ms, 2),
        # CPU time of the main process (its threads included, worker processes not): the harness's cost
        # beside the model when the workers have cores of their own
        "main_cpu_ms_per_question": round(1000 * seconds["main_cpu"] / n, 2),
        # the prefetch thread's share (0 with workers: they decode and process in other processes)
        "preprocessing_ms_per_question": round(1000 * seconds["preprocessing"] / n, 2),
        # the main process's CPU ms/question by part (gc: automatic collections, inside the other parts)
        "main_cpu_breakdown_ms": {part: round(1000 * value / n, 2) for part, value in breakdown.items()},
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--scoring", default="loglik", choices=["loglik", "generate"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-ms", type=float, default=0.0, help="simulated model time per question (ms)")
    parser.add_argument("--profile", type=int, default=25, help="cProfile entries to print (0: no profile)")
    parser.add_argument("--sort", default="cumulative", help="cProfile order: cumulative or tottime")
    parser.add_argument("--profile-file", type=Path, help="also write the cProfile statistics here (pstats)")
    parser.add_argument(
        "--profile-cpu",
        action="store_true",
        help="profile each thread's CPU time (time.thread_time) instead of the wall clock",
    )
    parser.add_argument(
        "--start-method",
        choices=["fork", "spawn", "forkserver"],
        help="how workers start (default: the wrapper's)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        nargs="+",
        default=[0],
        metavar="N",
        help="DataLoader worker processes (harness run --num-workers); several: one run per count",
    )
    args = parser.parse_args(argv)
    profile = args.profile if len(args.num_workers) == 1 else 0

    from harness.config import RunConfig
    from tasks.prepare import prepare_task  # noqa: F401  (imported before timing, as a long-lived process would)

    register()
    InstantIdefics2.model_seconds = args.model_ms / 1000
    InstantIdefics2.worker_start_method = args.start_method
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["HARNESS_HOME"] = str(root / "home")
        cub, choices, tiny = build_inputs(root, args.questions)
        config = RunConfig(
            model=NAME,
            task="bird200",
            model_args={"pretrained": str(tiny), "device": "cpu"},
            data_root=cub,
            choices=choices,
            scoring=args.scoring,
            batch_size=args.batch_size,
            limit=args.questions,
            output_dir=root / "runs",
        )
        results = []
        for workers in args.num_workers:
            config.num_workers = workers
            run_once(
                config
            )  # warm: the prepared task is cached and every module imported, as on a second run
            timer = time.thread_time if args.profile_cpu else time.perf_counter
            profiler = cProfile.Profile(timer) if profile else None
            clock = ThreadClock(profile=bool(profile), timer=timer)
            if profiler:
                profiler.enable()
            summary, seconds, breakdown = run_once(config, clock)
            if profiler:
                profiler.disable()
            results.append(measured(args, workers, summary, seconds, breakdown))
            print(json.dumps(results[-1]))
    if profiler and args.profile_file:
        profiler.dump_stats(args.profile_file)
        if clock.profiles:  # the other threads' statistics beside it
            pstats.Stats(*clock.profiles).dump_stats(f"{args.profile_file}.threads")
    if profiler:
        for title, profiles in (("main thread", [profiler]), ("other threads", clock.profiles)):
            if profiles:
                text = io.StringIO()
                pstats.Stats(*profiles, stream=text).sort_stats(args.sort).print_stats(profile)
                print(f"--- {title} ---\n{text.getvalue()}")
    result = results[0] if len(results) == 1 else {"runs": results}
    OUT.mkdir(exist_ok=True)
    (OUT / f"overhead_{args.scoring}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
