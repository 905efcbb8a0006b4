"""`harness probe repr`: the probes against direct computations, the features, the CLI end to end."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.core.errors import UserError
from harness.probes import analysis
from harness.probes.data import read_test_split, read_train_split
from harness.probes.descriptions import read_descriptions
from models.features.hidden_states import pool
from tasks.prompts import open_question_for
from tasks.registry import get_task

ROOT = Path(__file__).resolve().parents[1]


def clusters(n_classes=10, per_class=40, dim=24, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


@pytest.fixture(scope="module")
def probe_cub(tmp_path_factory) -> Path:
    from tasks.fixtures.datasets import make_cub

    return make_cub(
        tmp_path_factory.mktemp("probe-data") / "cub", n_classes=5, per_class_test=3, per_class_train=4
    )


# ---- the probes on arrays ------------------------------------------------------------------------


def test_linear_probe_separates_clusters_and_is_near_chance_on_shuffled_labels():
    train_x, train_y = clusters(seed=0)
    test_x, test_y = clusters(per_class=20, seed=0)
    test_x = test_x + 0.3 * np.random.default_rng(1).normal(size=test_x.shape)
    good = analysis.linear_probe(train_x, train_y, test_x, test_y, 10)
    assert good.accuracy > 0.9 and good.accuracy_ci95[0] <= good.accuracy <= good.accuracy_ci95[1]
    assert good.n_val > 0 and good.n_train == 400 and good.selection.startswith("validation")
    rng = np.random.default_rng(2)
    shuffled = analysis.linear_probe(train_x, rng.permutation(train_y), test_x, rng.permutation(test_y), 10)
    assert shuffled.accuracy < 0.2  # chance is 0.1


def test_linear_probe_choice_never_looks_at_test_labels():
    train_x, train_y = clusters(n_classes=4, per_class=15, spread=1.5)
    test_x, test_y = clusters(n_classes=4, per_class=10, spread=1.5, seed=3)
    a = analysis.linear_probe(train_x, train_y, test_x, test_y, 4, max_epochs=15)
    b = analysis.linear_probe(train_x, train_y, test_x, np.roll(test_y, 7), 4, max_epochs=15)
    assert (a.weight_decay, a.epochs, a.val_accuracy) == (b.weight_decay, b.epochs, b.val_accuracy)


def vlmclassifier_probe_directly(train_x, train_y, test_x, test_y, n_classes, seed, epochs, batch):
    """VLMClassifier's probe.py loop written out: one fixed (seeded) train order, Adam at 1e-3 on the
    raw features, the test accuracy after every epoch; the best one and its (first) epoch."""
    order = np.random.default_rng(seed).permutation(len(train_y))
    x, y = torch.tensor(train_x[order], dtype=torch.float32), torch.tensor(train_y[order])
    torch.manual_seed(seed)
    fc = torch.nn.Linear(x.shape[1], n_classes)
    adam = torch.optim.Adam(fc.parameters(), lr=0.001)
    accuracies = []
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            adam.zero_grad()
            torch.nn.CrossEntropyLoss()(fc(x[i : i + batch]), y[i : i + batch]).backward()
            adam.step()
        with torch.no_grad():
            predicted = fc(torch.tensor(test_x, dtype=torch.float32)).argmax(dim=1).numpy()
        accuracies.append(float((predicted == test_y).mean()))
    best = max(accuracies)
    return best, accuracies.index(best) + 1, accuracies


def overlapping_clusters(
    seed=0, n_classes=4, dim=30, per_train=10, per_test=20, spread=1.2, offset=2.0, scale=5.0
):
    """Train and test points around the same class centres, overlapping (the accuracy moves between
    epochs), far from the origin (standardisation would change the result)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) + offset

    def draw(per):
        labels = np.repeat(np.arange(n_classes), per)
        return scale * (centres[labels] + spread * rng.normal(size=(len(labels), dim))), labels

    return (*draw(per_train), *draw(per_test))


def test_vlmclassifier_probe_equals_a_direct_reimplementation():
    train_x, train_y, test_x, test_y = overlapping_clusters()
    got = analysis.linear_probe_test_selected(
        train_x, train_y, test_x, test_y, 4, seed=3, epochs=60, batch_size=16
    )
    best, epoch, curve = vlmclassifier_probe_directly(train_x, train_y, test_x, test_y, 4, 3, 60, 16)
    assert (got.accuracy, got.epochs) == (pytest.approx(best, abs=1e-9), epoch)
    assert len(set(curve)) > 3 and epoch not in (1, 60)  # a real choice among epochs, made on test
    assert got.selected_on == "test" and got.selection.startswith("test") and got.n_val == 0
    assert got.accuracy_ci95[0] <= got.accuracy <= got.accuracy_ci95[1] and got.weight_decay == 0.0
    # the reference's numbers are the defaults: 500 epochs, batch 512, lr 1e-3
    assert (analysis.REFERENCE_PROBE_EPOCHS, analysis.REFERENCE_PROBE_BATCH, analysis.REFERENCE_PROBE_LR) == (
        500,
        512,
        1e-3,
    )
    defaults = inspect.signature(analysis.linear_probe_test_selected).parameters
    assert (defaults["epochs"].default, defaults["batch_size"].default) == (500, 512)
    assert defaults["learning_rate"].default == 1e-3
    # ours never looks at test labels; this one does, and its figure is at least any single epoch's
    ours = analysis.linear_probe(train_x, train_y, test_x, test_y, 4)
    assert ours.selected_on == "validation" and got.accuracy == max(curve)


def test_vlmclassifier_recipe_extracts_with_the_reference_prompt(tiny_idefics2, probe_cub):
    from harness.probes.representation import ReprConfig, load_extractor

    task = get_task("bird200")
    args = {"pretrained": str(tiny_idefics2), "dtype": "float32", "device": "cpu"}
    theirs, info = load_extractor(
        ReprConfig(
            model="idefics2", task="bird200", data_root=probe_cub, model_args=args, recipe="vlmclassifier"
        ),
        task,
    )
    assert info["prompt"] == theirs.question == "What type of object is in this photo?"
    ours, _ = load_extractor(
        ReprConfig(model="idefics2", task="bird200", data_root=probe_cub, model_args=args), task
    )
    assert ours.question == open_question_for("bird")
    assert ours.identity != theirs.identity  # the prompt is in the feature cache's identity
    with pytest.raises(UserError, match="vlmclassifier"):
        ReprConfig(model="idefics2", task="bird200", data_root=probe_cub, recipe="vlmclasifier")


def test_stratified_holdout_keeps_one_of_each_class_in_train():
    labels = np.array([0, 0, 0, 0, 0, 1, 2, 2])
    kept, held = analysis.stratified_holdout(labels, 0.4, seed=0)
    assert sorted([*kept, *held]) == list(range(8))
    assert set(labels[kept]) == {0, 1, 2} and sum(labels[held] == 0) == 2 and 1 not in labels[held]


def test_alignment_equals_direct_cosines():
    rng = np.random.default_rng(0)
    image_x, labels = rng.normal(size=(12, 5)), np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1, 2])
    name_x = rng.normal(size=(3, 5))
    result = analysis.alignment(image_x, labels, name_x, ["a", "b", "c"])
    per_class = {}
    for c, name in enumerate("abc"):
        sims = [
            float(np.dot(v, name_x[c]) / (np.linalg.norm(v) * np.linalg.norm(name_x[c])))
            for v in image_x[labels == c]
        ]
        per_class[name] = sum(sims) / len(sims)
    assert result["per_class"] == pytest.approx(per_class)
    assert result["mean_cosine"] == pytest.approx(sum(per_class.values()) / 3)


def test_distances_equal_direct_computation():
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(10, 4)), np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centroids = np.array([unit[labels == c].mean(0) for c in range(3)])
    variance = np.mean([((unit[labels == c] - centroids[c]) ** 2).sum(1).mean() for c in range(3)])
    result = analysis.distances(x, labels)
    assert result["inter_class_distance"] == pytest.approx(pdist(centroids).mean())
    assert result["intra_class_variance"] == pytest.approx(variance)
    assert analysis.distances(x[:3], [0, 1, 2])["intra_class_variance"] is None


def test_descriptions_are_masked_and_split_one_to_one(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps(
            {
                "Laysan Albatross": [
                    "The laysan_albatross nests.",
                    "A Laysan  Albatross flies.",
                    "Laysan-Albatross eggs.",
                    "It is big.",
                ],
                "Sooty_Albatross": ["Sooty albatross is dark."],
            }
        )
    )
    descriptions = read_descriptions(path, ["Laysan_Albatross", "Sooty_Albatross"])
    split = analysis.split_descriptions(descriptions, ["Laysan_Albatross", "Sooty_Albatross"])
    assert (len(split.train_texts), len(split.test_texts), split.left_out) == (2, 2, ["Sooty_Albatross"])
    assert split.labels == [0, 0, 0, 0] and all("albatross" not in t.lower() for t in split.texts)
    assert sorted(split.texts) == sorted(
        ["The [CLASS] nests.", "A [CLASS] flies.", "[CLASS] eggs.", "It is big."]
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"classname": "Laysan_Albatross", "text": "x"}\n{"classname": "Dodo", "text": "y"}\n')
    with pytest.raises(UserError, match="bad.jsonl line 2: class 'Dodo'"):
        read_descriptions(bad, ["Laysan_Albatross"])


def test_tsne_png_is_a_valid_image(tmp_path):
    from harness.probes.tsne import draw_tsne, save_png_atomic, tsne_points

    x, labels = clusters(n_classes=4, per_class=6, dim=8)
    points = tsne_points(x, labels, x[::6] + 0.1, ["a", "b", "c", "d"], [0, 2, 3])
    assert points["classes"] == ["a", "c", "d"]  # k in [x, y, k] indexes these
    kept = [label for label in labels if label in (0, 2, 3)]
    assert [p[2] for p in points["images"]] == [{0: 0, 2: 1, 3: 2}[label] for label in kept]
    assert [p[2] for p in points["names"]] == [0, 1, 2]
    assert len({(p[0], p[1]) for p in points["images"] + points["names"]}) == 21  # real coordinates
    save_png_atomic(draw_tsne(points, "test"), tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as image:
        image.verify()
    with Image.open(tmp_path / "t.png") as image:
        assert image.format == "PNG" and image.size[0] > 600
        colours = {image.getpixel((x, y)) for x in range(0, 640, 4) for y in range(0, 640, 4)}
        assert len(colours) > 3  # points were drawn


# ---- features -------------------------------------------------------------------------------------


def test_pool_takes_last_real_token_and_masked_mean():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    out = pool(hidden, mask)
    assert torch.equal(out["last"], hidden[:, -1])
    assert torch.allclose(out["avg"][0], hidden[0, 2:].mean(0)) and torch.allclose(
        out["avg"][1], hidden[1].mean(0)
    )
    right = pool(hidden, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]))
    assert torch.equal(right["last"], torch.stack([hidden[0, 1], hidden[1, 2]]))


def test_cub_train_split_is_the_flagged_images(probe_cub):
    task = get_task("bird200")
    train, test = read_train_split(task, probe_cub), read_test_split(task, probe_cub)
    flags = dict(line.split() for line in (probe_cub / "train_test_split.txt").read_text().splitlines())
    paths = dict(line.split() for line in (probe_cub / "images.txt").read_text().splitlines())
    expected = {f"images/{paths[i]}" for i, flag in flags.items() if flag == "1"}
    assert {i.key for i in train.items} == expected and len(expected) == 20
    assert not expected & {i.key for i in test.items}


def test_mllm_features_match_the_model_and_come_back_from_the_cache(tiny_idefics2, probe_cub, tmp_path):
    from harness.probes.features import FeatureCache, image_features
    from harness.probes.representation import ReprConfig, load_extractor

    task = get_task("bird200")
    config = ReprConfig(
        model="idefics2",
        task="bird200",
        data_root=probe_cub,
        model_args={"pretrained": str(tiny_idefics2), "dtype": "float32", "device": "cpu"},
    )
    extractor, info = load_extractor(config, task)
    items = read_test_split(task, probe_cub).items[:5]
    cache = FeatureCache(extractor.identity, tmp_path / "cache")
    batched = image_features(extractor, items, cache=cache, batch_size=3)
    with Image.open(items[4].image) as image:
        alone = extractor.wrapper.features([info["prompt"]], [[image.convert("RGB")]])
    for view in ("last", "avg"):
        assert batched[view].shape == (5, 64)
        assert np.allclose(batched[view][4], alone[view][0].numpy(), atol=1e-4)

    def fail(images):
        raise AssertionError("recomputed a cached feature")

    extractor.image_features = fail
    again = image_features(extractor, items, cache=cache)
    assert all(np.array_equal(again[v], batched[v]) for v in ("last", "avg"))


def test_clip_features_are_the_reference(probe_cub, tmp_path):
    from harness.probes.representation import ReprConfig, run_repr
    from tasks.clip_miner import load_encoder
    from tasks.fixtures.tiny_clip import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    report, folder = run_repr(
        ReprConfig(
            model=f"clip:hf:{clip}",
            task="bird200",
            data_root=probe_cub,
            out=tmp_path / "o",
            probes=("linear", "alignment", "distances"),
        )
    )
    assert report["views"] == ["embed"] and report["prompt"] is None
    encoder = load_encoder(f"hf:{clip}")
    test = read_test_split(get_task("bird200"), probe_cub)
    images = [Image.open(i.image).convert("RGB") for i in test.items]
    direct_x = encoder.encode_images(images)
    names = encoder.encode_texts([f"an image of a {n.replace('_', ' ')}" for n in test.class_names])
    direct = analysis.alignment(direct_x, [i.label for i in test.items], names, test.class_names)
    assert report["alignment"]["embed"]["mean_cosine"] == pytest.approx(direct["mean_cosine"], abs=1e-5)
    assert report["linear"]["embed"]["n_train"] == 20 and report["linear"]["embed"]["n_test"] == 15
    assert json.loads((folder / "probes.json").read_text())["model"] == f"clip:hf:{clip}"


def test_probe_repr_cli_end_to_end_on_tiny_idefics2(tiny_idefics2, probe_cub, tmp_path):
    from harness.core.probe_results import load_probe_report

    descriptions = tmp_path / "d.jsonl"
    descriptions.write_text(
        "\n".join(
            json.dumps({"classname": name, "text": f"The {name} has feature {k}."})
            for name in ("Black_footed_Albatross", "Laysan_Albatross")
            for k in range(4)
        )
    )
    out = tmp_path / "report"
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "probe",
        "repr",
        "--model",
        "idefics2",
        "--model-args",
        f"pretrained={tiny_idefics2},dtype=float32,device=cpu",
        "--task",
        "bird200",
        "--data-root",
        str(probe_cub),
        "--descriptions",
        str(descriptions),
        "--out",
        str(out),
        "--db-url",
        f"sqlite:///{tmp_path / 'lb.db'}",
        "--json",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert "linear probe" in done.stderr and line["views"] == ["last", "avg"]  # --json: the table on stderr
    report = load_probe_report(out)
    assert report["n_train"] == 20 and report["n_test"] == 15 and report["train_split"]
    assert set(report["linear"]) == set(report["knowledge"]) == {"last", "avg"}
    assert report["knowledge"]["last"]["n_classes"] == 2 and report["knowledge"]["last"]["chance"] == 0.5
    assert report["provenance"]["command"][:3] == ["harness", "probe", "repr"]
    for view, png in line["tsne"].items():
        with Image.open(png) as image:
            image.verify()
        assert Path(png).parent == out and report["tsne"][view] == Path(png).name
        assert len(report["tsne_points"][view]["names"]) == len(report["tsne_points"][view]["classes"])
    from leaderboard.store import ResultStore, model_name_for

    store = ResultStore.open(f"sqlite:///{tmp_path / 'lb.db'}")  # recorded by the command
    (recorded,) = store.probe_reports(model_name_for(report))
    assert recorded["report"]["run_id"] == report["run_id"]
    store.close()


def test_bad_probe_input_is_refused_before_loading(probe_cub, tmp_path):
    from harness.cli import main

    assert (
        main(
            [
                "probe",
                "repr",
                "--model",
                "idefics2",
                "--task",
                "bird200",
                "--data-root",
                str(probe_cub),
                "--probes",
                "linear,colour",
                "--no-record",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "probe",
                "repr",
                "--model",
                "idefics2",
                "--task",
                "bird200",
                "--data-root",
                str(probe_cub),
                "--probes",
                "knowledge",
                "--no-record",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "probe",
                "repr",
                "--model",
                "idefics2",
                "--task",
                "car196",
                "--data-root",
                str(tmp_path / "nope"),
                "--no-record",
            ]
        )
        == 2
    )


class DescribingLLM(ThreadingHTTPServer):
    """An OpenAI-compatible endpoint on 127.0.0.1 that describes the class named in each prompt."""

    def __init__(self):
        self.prompts: list[str] = []
        super().__init__(("127.0.0.1", 0), DescribingHandler)


class DescribingHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][0]["content"]
        self.server.prompts.append(prompt)
        name = re.search(r'category "([^"]+)"', prompt).group(1)
        lines = [f"{k}. The {name} has trait number {k} of its kind." for k in range(1, 5)]
        body = json.dumps({"choices": [{"message": {"content": "\n".join(["Here you go:", *lines])}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_knowledge_probe_on_descriptions_written_by_an_llm_server(probe_cub, tmp_path):
    from harness.probes.representation import ReprConfig, run_repr
    from tasks.fixtures.tiny_clip import build_tiny_clip

    server = DescribingLLM()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = ReprConfig(
            model=f"clip:hf:{build_tiny_clip(tmp_path / 'clip')}",
            task="bird200",
            data_root=probe_cub,
            out=tmp_path / "o",
            probes=("knowledge",),
            descriptions_per_class=4,
            describe_llm=f"openai:http://127.0.0.1:{server.server_port}#m",
        )
        report, folder = run_repr(config)
        assert len(server.prompts) == 5 and "4 different facts" in server.prompts[0]
        saved = json.loads((folder / "descriptions.json").read_text())
        assert saved["Laysan_Albatross"][0] == "The Laysan Albatross has trait number 1 of its kind."
        knowledge = report["knowledge"]["embed"]
        assert (knowledge["n_train"], knowledge["n_test"], knowledge["n_classes"]) == (10, 10, 5)
        assert report["descriptions_source"].startswith("openai:")
        with pytest.raises(UserError, match="is not empty"):  # a report folder is never shared
            ReprConfig(**{**vars(config), "out": folder})
        config.out = tmp_path / "o2"
        run_repr(config)  # another folder: the same request's descriptions are reused, nothing is asked
        assert (
            len(server.prompts) == 5
            and (tmp_path / "o2" / "descriptions.json").read_text()
            == (folder / "descriptions.json").read_text()
        )
    finally:
        server.shutdown()


def test_siglip_features_are_a_reference_too(probe_cub, tmp_path):
    from harness.probes.representation import ReprConfig, run_repr
    from tasks.clip_miner import load_encoder
    from tasks.fixtures.tiny_clip import build_tiny_siglip

    siglip = build_tiny_siglip(tmp_path / "siglip")
    encoder = load_encoder(f"hf:{siglip}")
    assert type(encoder.model).__name__ == "SiglipModel" and encoder.text_padding == "max_length"
    report, _ = run_repr(
        ReprConfig(
            model=f"clip:hf:{siglip}",
            task="bird200",
            data_root=probe_cub,
            out=tmp_path / "o",
            probes=("alignment", "distances"),
        )
    )
    test = read_test_split(get_task("bird200"), probe_cub)
    direct_x = encoder.encode_images([Image.open(i.image).convert("RGB") for i in test.items])
    names = encoder.encode_texts([f"an image of a {n.replace('_', ' ')}" for n in test.class_names])
    direct = analysis.alignment(direct_x, [i.label for i in test.items], names, test.class_names)
    assert report["alignment"]["embed"]["mean_cosine"] == pytest.approx(direct["mean_cosine"], abs=1e-5)


FEATURE_SUPPORT = {  # registry name -> (image prompts, plain text)
    "idefics2": (True, True),
    "llava15": (True, True),
    "llava_next_mistral": (True, True),
    "instructblip_vicuna": (True, True),  # text through its language model alone
    "paligemma": (True, True),
    "idefics1": (True, False),  # its forward needs an image
    "instructblip_flant5": (False, False),  # encoder-decoder language models: not probed
    "blip2_flant5": (False, False),
}


@pytest.mark.slow  # builds and loads a tiny checkpoint of every native architecture
@pytest.mark.parametrize("name", list(FEATURE_SUPPORT))
def test_features_of_every_native_architecture(name):
    from tests.model_fixtures import load, picture, tiny_checkpoint

    wrapper = load(name, tiny_checkpoint(name))
    images, texts = [[picture("red", "white")], [picture("navy", "yellow")]], ["Laysan Albatross", "a gull"]
    image_ok, text_ok = FEATURE_SUPPORT[name]
    for supported, compute, alone in (
        (
            image_ok,
            lambda: wrapper.features(["What bird is this?"] * 2, images),
            lambda: wrapper.features(["What bird is this?"], images[1:]),
        ),
        (text_ok, lambda: wrapper.text_features(texts), lambda: wrapper.text_features(texts[1:])),
    ):
        if not supported:
            with pytest.raises(UserError, match="cannot give hidden-state features"):
                compute()
            continue
        batch, single = compute(), alone()
        for view in ("last", "avg"):  # padding in a batch changes nothing
            assert batch[view].shape[0] == 2 and torch.allclose(batch[view][1], single[view][0], atol=1e-4)
