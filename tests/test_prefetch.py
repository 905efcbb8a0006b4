"""Image loading and preprocessing run ahead of the model (models.base.EncodingPrefetcher), each
document's images are decoded once, and lmms-eval's own passes over the documents decode none."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass

import pytest

from models.base import EncodingPrefetcher
from models.requests import DocumentImages


@dataclass
class Item:
    context: str
    source: DocumentImages

    @property
    def images(self) -> list:
        return self.source.get()


def _items(n: int, loads: list[int]) -> list[Item]:
    def loader(i):
        def load():
            loads.append(i)
            return [f"image-{i}"]  # stands in for a decoded PIL image

        return load

    return [Item(f"question {i}", DocumentImages(loader(i))) for i in range(n)]


def test_each_batch_is_encoded_ahead_in_a_background_thread_and_served_once():
    loads, calls = [], []
    second_batch_encoding = threading.Event()

    def encode(prompts, images):
        calls.append((tuple(prompts), threading.current_thread().name))
        if prompts[0].endswith("question 2"):
            second_batch_encoding.set()
        return {"encoded": tuple(prompts)}

    items = _items(6, loads)
    prefetcher = EncodingPrefetcher(encode, lambda context, n: f"<{n}>{context}", run_processor=True)
    served = []
    for batch in prefetcher.batches(iter([items[0:2], items[2:4], items[4:6]])):
        prompts = [f"<1>{item.context}" for item in batch]
        if batch[0] is items[0]:
            # the model works on batch 0 while batch 1's images are decoded and processed
            assert second_batch_encoding.wait(timeout=10)
        served.append(prefetcher.encode(prompts, [item.images for item in batch]))
    assert served == [{"encoded": (f"<1>question {i}", f"<1>question {i + 1}")} for i in (0, 2, 4)]
    assert len(calls) == 3 and all(name.startswith("fgvr-prefetch") for _, name in calls)
    assert sorted(loads) == list(range(6))  # each document decoded once
    assert all(item.source._images is None for item in items)  # released after their batch


def test_other_encodings_and_preprocessing_errors_are_not_swallowed():
    def encode(prompts, images):
        if "bad" in prompts[0]:
            raise OSError("truncated JPEG")
        return list(prompts)

    prefetcher = EncodingPrefetcher(encode, lambda context, n: context, run_processor=True)
    items = _items(2, [])
    for _batch in prefetcher.batches(iter([items])):
        assert prefetcher.encode(["question 0 + answer"], [["x"]]) == [
            "question 0 + answer"
        ]  # not prefetched
    bad = [Item("bad", DocumentImages(lambda: ["image"]))]
    with pytest.raises(OSError, match="truncated JPEG"):
        list(EncodingPrefetcher(encode, lambda context, n: context, run_processor=True).batches(iter([bad])))


def test_a_run_decodes_each_image_once(capsys, monkeypatch, tmp_path, tiny_idefics2, cub_root, cub_choices):
    import PIL.JpegImagePlugin

    from harness.cli import main
    from models.base import FGVRModel

    decoded = []
    original = PIL.JpegImagePlugin.JpegImageFile.load

    def counting_load(self):
        if getattr(self, "_im", None) is None:
            decoded.append(self)
        return original(self)

    monkeypatch.setattr(PIL.JpegImagePlugin.JpegImageFile, "load", counting_load)
    encodes = []
    original_encode = FGVRModel.encode

    def counting_encode(self, prompts, images):
        encodes.append(threading.current_thread().name)
        return original_encode(self, prompts, images)

    monkeypatch.setattr(FGVRModel, "encode", counting_encode)
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny_idefics2},device=cpu",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--scoring",
        "loglik",
        "--batch-size",
        "4",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    prepare = ["prepare", "bird200", "--source", str(cub_root), "--choices", str(cub_choices)]
    assert main(prepare) == 0  # preparation checks every image once; not what is counted here
    decoded.clear()
    assert main(args) == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["n"] == 10
    assert len(decoded) == 10  # one decode per question: none by lmms-eval, one per document in the wrapper
    assert encodes and all(name.startswith("fgvr-prefetch") for name in encodes)  # 3 batches, all ahead


IMPORTED_AS = "imported"  # set otherwise by the test: a forked worker sees that, a spawned one imports anew


def logged_visual(doc: dict) -> list:
    """A task's doc_to_visual that notes which process decoded and how it started (module-level:
    workers get it by name)."""
    import os

    from PIL import Image

    with open(doc["log"], "a") as log:
        log.write(f"{os.getpid()}:{IMPORTED_AS}\n")
    return [Image.open(doc["path"]).convert("RGB")]


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("model", "start", "workers"),
    [
        ("idefics2", "fork", 2),
        pytest.param("idefics2", "spawn", 1, marks=pytest.mark.slow),
        ("idefics1", "fork", 2),  # its own processor call (`process`)
    ],
)
def test_worker_processes_decode_and_process_and_change_no_answer(
    monkeypatch, tmp_path, tiny_idefics2, cub_root, model, start, workers
):
    """--num-workers N: the images are decoded (and the processor run) in DataLoader worker processes,
    forked or spawned, and every generated answer and option score equals the in-process path's
    (--num-workers 0). One set of workers serves every call."""
    import os

    from lmms_eval.api.instance import Instance

    from tests.model_fixtures import LETTERS, QUESTION, load, tiny_checkpoint

    decoders = tmp_path / "decoders.txt"
    paths = sorted(cub_root.rglob("*.jpg"))[:5]
    checkpoint = tiny_idefics2 if model == "idefics2" else tiny_checkpoint(model)
    wrapper = load(model, checkpoint, batch_size=2, max_new_tokens=4)
    wrapper.task_dict = {"t": {"test": [{"path": str(path), "log": str(decoders)} for path in paths]}}
    wrapper.worker_start_method = start
    monkeypatch.setattr(sys.modules[__name__], "IMPORTED_AS", "the test's process")

    def instances(kind: str, items: list[tuple]) -> list[Instance]:
        return [
            Instance(
                kind,
                (question, second, logged_visual, d, "t", "test"),
                i,
                {"task": "t", "doc_id": d, "repeats": 1},
            )
            for i, (d, question, second) in enumerate(items)
        ]

    docs = range(len(paths))
    generations = instances(
        "generate_until", [(d, f"What bird is this? {d}", {"until": ["\n"]}) for d in docs]
    )
    options = instances("loglikelihood", [(d, QUESTION, letter) for d in docs for letter in LETTERS])
    answers, pools = {}, set()
    for count in (0, workers):
        decoders.unlink(missing_ok=True)
        wrapper.num_workers = count
        wrapper.shared_prefix = True
        texts = wrapper.generate_until(generations)
        scores = [r.text for r in wrapper.loglikelihood(options)]
        decoded = dict(line.split(":") for line in decoders.read_text().splitlines())
        # with workers, nothing is decoded here: the processor ran there too
        assert set(decoded) == {str(os.getpid())} if count == 0 else str(os.getpid()) not in decoded
        if count:  # forked workers inherit this process's state, spawned ones start afresh
            assert set(decoded.values()) == {"imported" if start == "spawn" else "the test's process"}
        wrapper.shared_prefix = False  # prompt + answer encodings: not prefetched, so decoded here on demand
        naive = [r.text for r in wrapper.loglikelihood(options)]
        answers[count] = (texts, scores, naive)
        pools.add(id(wrapper.__dict__.get("_workers")))
    assert answers[workers] == answers[0]
    assert len(answers[0][1]) == 4 * len(paths) and all(isinstance(t, str) for t in answers[0][0])
    assert len(pools - {id(None)}) == 1  # the workers started once, for three calls
    assert wrapper._workers.settings[:3] == (workers, start, True)  # and ran the processor
    wrapper.clean()


class HeavyTask:
    """Stands in for lmms-eval's ConfigurableTask, whose `doc_to_visual` is a bound method: pickled,
    the method carries the whole task object (150 KB for a FOCI task, more with few-shot data)."""

    def __init__(self, paths: list):
        self.paths, self.payload = paths, list(range(100_000))

    def doc_to_visual(self, doc: dict) -> list:
        from PIL import Image

        return [Image.open(self.paths[doc["i"]]).convert("RGB")]


def test_a_worker_job_names_its_task_and_the_workers_hold_each_tasks_image_loader(
    tmp_path, tiny_idefics2, cub_root
):
    """What goes to a worker per batch is each question's text, task, split and index (it was the
    task's bound doc_to_visual, pickled with its task into every job); the workers get each task's
    loader once, and a call with a task they lack gets a new pool that holds both."""
    import pickle

    from models.base import WorkerJobs
    from models.requests import VisualSource
    from tests.model_fixtures import load

    paths = sorted(cub_root.rglob("*.jpg"))[:2]
    task, other = HeavyTask(paths), HeavyTask(paths[::-1])
    documents = {name: {"test": [{"i": 0}, {"i": 1}]} for name in ("t", "u")}

    def items(name: str, owner: HeavyTask) -> list[Item]:
        sources = [VisualSource(owner.doc_to_visual, name, "test", d) for d in (0, 1)]
        loads = [lambda s=s: s.load(documents) for s in sources]
        return [
            Item(f"Which bird? {d}", DocumentImages(f, s)) for d, (f, s) in enumerate(zip(loads, sources))
        ]

    batch = items("t", task)
    job = WorkerJobs.job(batch)
    assert len(pickle.dumps(job)) < 1_000 < 100_000 < len(pickle.dumps(batch[0].source.origin))
    wrapper = load("idefics2", tiny_idefics2)
    wrapper.task_dict, wrapper.num_workers = documents, 1
    shared, prompts, _ = WorkerJobs(wrapper.worker_encoder(), documents, {"t": task.doc_to_visual}, False)[
        job
    ]
    decoded = [[image.image() for image in row] for row in shared]
    assert [row[0].tobytes() for row in decoded] == [item.images[0].tobytes() for item in batch]
    assert prompts == [wrapper.prompt_for(item.context, 1) for item in batch]

    pool = wrapper.worker_pool(True, batch)  # the processes start on the pool's first call, not here
    assert wrapper.worker_pool(True, items("t", task)) is pool  # the same task's loader: the same workers
    grown = wrapper.worker_pool(True, items("u", other))
    assert grown is not pool and grown.visuals == {"t": task.doc_to_visual, "u": other.doc_to_visual}
    wrapper.clean()


def test_what_spawned_workers_receive_pickles_in_a_harness_run(tmp_path, tiny_idefics2):
    """A spawned worker gets the wrapper without its model, pickled: in a run the response journal
    has replaced the request methods on the wrapper with closures, which must stay behind."""
    import pickle

    from harness.journal import ResponseJournal
    from tests.model_fixtures import load

    wrapper = load("idefics2", tiny_idefics2)
    ResponseJournal(tmp_path / "journal.jsonl").attach(wrapper)
    wrapper.task_dict = {"t": {"test": [{"path": "x.jpg"}]}}
    encoder = pickle.loads(pickle.dumps(wrapper.worker_encoder()))
    assert "model" not in vars(encoder) and "loglikelihood" not in vars(encoder)
    assert encoder.prompt_for("Which bird?", 1) == wrapper.prompt_for("Which bird?", 1)


def test_num_workers_is_refused_below_zero_and_defaults_to_none_on_cpu():
    from types import SimpleNamespace

    from harness.config import RunConfig
    from harness.core.errors import UserError
    from models.base import FGVRModel, default_num_workers

    with pytest.raises(UserError, match="--num-workers must be >= 0"):
        RunConfig(model="idefics2", task="bird200", num_workers=-1)
    assert default_num_workers("cpu") == 0
    gpu_rank = SimpleNamespace(device_name="cuda:0", _world_size=1)
    for value in ("-1", "two"):  # --model-args num_workers=...
        with pytest.raises(UserError, match="num_workers must be a whole number >= 0"):
            FGVRModel.worker_count(gpu_rank, value)
    assert FGVRModel.worker_count(gpu_rank, "0") == 0 and FGVRModel.worker_count(gpu_rank, "3") == 3
    assert FGVRModel.worker_count(gpu_rank, "auto") == default_num_workers("cuda:0", 1)
    assert 0 <= default_num_workers("cuda", world_size=1) <= 4
    assert default_num_workers("cuda", world_size=10_000) == 0


@pytest.mark.subprocess
@pytest.mark.slow  # ~55 s on 2 shared cores: three processes load the model
def test_data_parallel_ranks_with_their_own_workers_answer_as_one_process(
    capfd, tmp_path, tiny_idefics2, cub_root, cub_choices
):
    """`harness run --num-processes 2 --num-workers 1` (each rank decodes and processes in a worker of
    its own) generates the same answer to every question as one process without workers."""
    from harness.cli import main

    answers = {}
    for processes, workers in ((1, 0), (2, 1)):
        args = [
            "run", "--model", "idefics2", "--task", "bird200", "--data-root", str(cub_root),
            "--choices", str(cub_choices), "--model-args", f"pretrained={tiny_idefics2},device=cpu",
            "--scoring", "generate", "--batch-size", "2", "--json", "--no-record",
            "--output-dir", str(tmp_path / str(processes)),
            "--num-processes", str(processes), "--num-workers", str(workers),
        ]  # fmt: skip
        assert main(args) == 0
        line = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
        with open(line["samples_file"]) as samples:
            answers[processes] = sorted((s["doc_id"], s["resps"]) for s in map(json.loads, samples))
    assert len(answers[1]) == 10 and answers[2] == answers[1]
