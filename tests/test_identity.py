"""One identity for every cached, journalled, recorded or named computation (issue 17, items 1-4):
harness.core.identity is the only definition, and every cache, journal, record and name uses it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.core import identity

ROOT = Path(__file__).resolve().parent.parent
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def small_cub(tmp_path_factory) -> Path:
    from tasks.fixtures.datasets import make_cub

    return make_cub(
        tmp_path_factory.mktemp("identity") / "cub", n_classes=3, per_class_test=2, per_class_train=2
    )


def lora(base: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter on the tiny Idefics2 with random B (it moves the outputs from the start)."""
    import torch
    from transformers import Idefics2ForConditionalGeneration

    config = peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=r".*text_model.*\.(q_proj|v_proj)", init_lora_weights=False
    )
    torch.manual_seed(seed)
    model = peft.get_peft_model(Idefics2ForConditionalGeneration.from_pretrained(base), config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def two_fts(tiny_idefics2, tmp_path_factory) -> tuple[Path, Path]:
    """Two different adapters, each in a folder called `ft`."""
    root = tmp_path_factory.mktemp("adapters")
    return lora(tiny_idefics2, root / "a" / "ft", 1), lora(tiny_idefics2, root / "b" / "ft", 2)


def probe(model: str, cub: Path, out: Path, **model_args):
    from harness.probes.representation import ReprConfig, run_repr

    config = ReprConfig(
        model=model,
        task="bird200",
        data_root=cub,
        model_args={"dtype": "float32", "device": "cpu", **model_args},
        probes=("alignment", "distances"),
        out=out,
        batch_size=4,
    )
    return run_repr(config)[0]


def alignment(report) -> dict:
    return {view: result["mean_cosine"] for view, result in report["alignment"].items()}


def fresh_home(monkeypatch, tmp_path: Path, name: str) -> None:
    """An empty HARNESS_HOME: nothing cached, so what a probe returns there was computed."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / name))


# ---- item 1: another adapter on the same base is another computation ------------------------------


def test_probe_features_of_adapter_b_after_adapter_a_are_b_own(
    tiny_idefics2, two_fts, small_cub, tmp_path, monkeypatch
):
    a, b = two_fts
    fresh_home(monkeypatch, tmp_path, "shared")
    with_a = probe("finedefics", small_cub, tmp_path / "a", pretrained=str(tiny_idefics2), adapter=str(a))
    b_after_a = probe("finedefics", small_cub, tmp_path / "b", pretrained=str(tiny_idefics2), adapter=str(b))
    fresh_home(monkeypatch, tmp_path, "fresh")
    b_alone = probe("finedefics", small_cub, tmp_path / "b2", pretrained=str(tiny_idefics2), adapter=str(b))
    assert alignment(with_a) != alignment(b_after_a)  # the adapters differ, so reuse would show
    assert alignment(b_after_a) == pytest.approx(alignment(b_alone), abs=1e-6)
    assert (
        with_a["model_revision"]
        != b_after_a["model_revision"]
        != identity.weights_fingerprint(str(tiny_idefics2), None)
    )


# ---- item 2: a model-arg that changes the inputs is part of the identity ----------------------------


def test_qwen_max_pixels_features_are_not_the_default_resolutions(small_cub, tmp_path, monkeypatch):
    from tests.model_fixtures import tiny_checkpoint

    qwen = str(
        tiny_checkpoint("qwen2_5_vl")
    )  # its default budget takes the 48 px images whole; 1024 px shrinks them
    fresh_home(monkeypatch, tmp_path, "shared")
    default = probe("qwen2_5_vl", small_cub, tmp_path / "d", pretrained=qwen)
    budget = probe("qwen2_5_vl", small_cub, tmp_path / "m", pretrained=qwen, max_pixels="1024")
    fresh_home(monkeypatch, tmp_path, "fresh")
    alone = probe("qwen2_5_vl", small_cub, tmp_path / "m2", pretrained=qwen, max_pixels="1024")
    assert alignment(default) != alignment(budget)
    assert alignment(budget) == pytest.approx(alignment(alone), abs=1e-6)
    assert budget["model_args"]["max_pixels"] == "1024" and budget["identity"] != default["identity"]


# ---- item 3: one name for the same weights, whichever command evaluated them -----------------------


def test_two_adapters_in_folders_named_ft_get_one_name_each_from_run_and_probe(
    tiny_idefics2, two_fts, cub_root, cub_choices
):
    from harness.config import RunConfig
    from harness.runner import plan_run
    from leaderboard.store import model_name_for

    names = []
    for adapter in two_fts:
        args = {"pretrained": str(tiny_idefics2), "adapter": str(adapter)}
        plan = plan_run(
            RunConfig(
                model="finedefics", task="bird200", model_args=args, data_root=cub_root, choices=cub_choices
            )
        )
        run = {"model": "finedefics", "model_args": args, "model_revision": plan.model_revision}
        report = {  # the fields `harness probe repr` records (load_extractor)
            "model": "finedefics",
            "model_args": args,
            "pretrained": str(tiny_idefics2),
            "model_revision": identity.identify("finedefics", str(tiny_idefics2), args).weights,
        }
        assert model_name_for(run) == model_name_for(report)
        names.append(model_name_for(run))
    assert names[0] != names[1] and all(name.startswith("ft@") for name in names)


def test_a_probe_report_of_an_adapter_is_named_by_the_adapter(tiny_idefics2, two_fts, small_cub, tmp_path):
    from leaderboard.store import model_name_for

    a, _ = two_fts
    report = probe("finedefics", small_cub, tmp_path / "r", pretrained=str(tiny_idefics2), adapter=str(a))
    weights = identity.weights_fingerprint(str(tiny_idefics2), None, str(a))
    assert report["model_revision"] == weights
    assert model_name_for(report) == f"ft@{weights.split(':')[-1][:8]}"


# ---- item 4: a report folder is never shared, a stored report never changes ------------------------


def test_a_second_probe_into_the_same_out_is_refused_and_stored_reports_keep_their_figures(
    small_cub, tmp_path, capsys
):
    from harness.cli import main
    from leaderboard.store import ResultStore, model_name_for
    from tasks.fixtures.tiny_clip import build_tiny_clip, build_tiny_siglip

    url = f"sqlite:///{tmp_path / 'lb.db'}"
    out = tmp_path / "report"

    def repr_into(model: str, *extra: str) -> int:
        argv = ["probe", "repr", "--model", model, "--task", "bird200", "--data-root", str(small_cub)]
        return main(
            [*argv, "--probes", "tsne", "--tsne-classes", "2", "--out", str(out), "--db-url", url, *extra]
        )

    first = f"clip:hf:{build_tiny_clip(tmp_path / 'clip')}"
    second = f"clip:hf:{build_tiny_siglip(tmp_path / 'siglip')}"
    assert repr_into(first) == 0
    png = (out / "tsne_embed.png").read_bytes()
    capsys.readouterr()
    assert repr_into(second) == 2
    refusal = capsys.readouterr().err.strip()
    assert "is not empty" in refusal and "--overwrite" in refusal and len(refusal.splitlines()) == 1
    assert repr_into(second, "--overwrite") == 0
    assert (out / "tsne_embed.png").read_bytes() != png  # the folder now holds the second report
    store = ResultStore.open(url)
    try:
        (kept,) = store.probe_reports(first)
        assert (Path(kept["folder"]) / "tsne_embed.png").read_bytes() == png
        (other,) = store.probe_reports(second)
        assert other["report"]["run_id"] != kept["report"]["run_id"]
        assert model_name_for(kept["report"]) != model_name_for(other["report"])
    finally:
        store.close()


def test_probe_repr_out_a_file_is_one_line(small_cub, tmp_path, capsys):
    from harness.cli import main

    (tmp_path / "file").write_text("x")
    argv = [
        "probe",
        "repr",
        "--model",
        "clip:hf:/nowhere",
        "--task",
        "bird200",
        "--data-root",
        str(small_cub),
    ]
    assert main([*argv, "--out", str(tmp_path / "file"), "--no-record"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file" in err and len(err.splitlines()) == 1


# ---- the identity itself ------------------------------------------------------------------------


def test_every_output_changing_model_arg_is_in_the_identity(tiny_idefics2):
    base = identity.identify("idefics2", str(tiny_idefics2), {"dtype": "float32"})
    for args in (
        {"dtype": "bfloat16"},
        {"dtype": "float32", "max_new_tokens": "5"},
        {"dtype": "float32", "x": "1"},
    ):
        assert identity.computation_key(identity.identify("idefics2", str(tiny_idefics2), args)) != (
            identity.computation_key(base)
        )
    for name in identity.NON_OUTPUT_ARGS:
        if name in ("pretrained", "adapter", "revision"):
            continue  # named by the weights fingerprint
        same = identity.identify("idefics2", str(tiny_idefics2), {"dtype": "float32", name: "8"})
        assert identity.computation_key(same) == identity.computation_key(base)
    other_data = identity.identify("idefics2", str(tiny_idefics2), {"dtype": "float32"}, data="d2")
    other_protocol = identity.identify("idefics2", str(tiny_idefics2), {"dtype": "float32"}, protocol="foci")
    keys = {identity.computation_key(x) for x in (base, other_data, other_protocol)}
    assert len(keys) == 3


def test_weights_rewritten_in_place_are_other_weights(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"a" * 64)
    first = identity.identify("idefics2", str(folder), {})
    (folder / "model.safetensors").write_bytes(b"b" * 64)
    assert identity.computation_key(
        identity.identify("idefics2", str(folder), {})
    ) != identity.computation_key(first)


# ---- every cache, journal, record and name calls it --------------------------------------------


def test_every_cache_journal_record_and_name_calls_the_identity(
    tiny_idefics2, cub_root, cub_choices, small_cub, tmp_path, monkeypatch
):
    """Replace the identity's functions: each caller's key, fingerprint or name must follow."""
    from harness.config import RunConfig
    from harness.probes.features import FeatureCache
    from harness.runner import journal_for, plan_run
    from leaderboard.store import ResultStore, model_name_for
    from tasks.fixtures.tiny_clip import build_tiny_clip
    from tests.leaderboard.lb_factories import make_summary

    monkeypatch.setattr(identity, "computation_key", lambda of: "KEY0" + "0" * 28)
    monkeypatch.setattr(identity, "weights_fingerprint", lambda *a, **k: "local-sha256:" + "f" * 32)
    monkeypatch.setattr(identity, "model_name", lambda *a, **k: "NAMED-BY-IDENTITY")
    args = {"pretrained": str(tiny_idefics2)}
    plan = plan_run(
        RunConfig(model="idefics2", task="bird200", model_args=args, data_root=cub_root, choices=cub_choices)
    )
    assert "KEY0" in journal_for(plan).path.name  # the response journal
    assert plan.model_revision == "local-sha256:" + "f" * 32  # the summary's weights
    assert FeatureCache(plan.identity, tmp_path / "features").folder.name.startswith("KEY0")  # features
    report = probe(f"clip:hf:{build_tiny_clip(tmp_path / 'clip')}", small_cub, tmp_path / "r")
    assert report["identity"].startswith("KEY0") and report["model_revision"] == "local-sha256:" + "f" * 32
    assert model_name_for(make_summary()) == "NAMED-BY-IDENTITY"  # leaderboard names (runs, imports, probes)
    store = ResultStore.open(f"sqlite:///{tmp_path / 'lb.db'}")
    try:
        store.record_summary(make_summary())
        store.record_probes(dict(report, model="idefics2"))
        info, rows = store.model_info("NAMED-BY-IDENTITY")
        assert rows and store.probe_reports("NAMED-BY-IDENTITY")
    finally:
        store.close()


def test_a_local_llm_rewritten_in_place_is_another_backend(tmp_path):
    from harness.probes.build_qa import ReplyJournal

    folder = tmp_path / "llm"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"a" * 32)
    before = ReplyJournal.key(f"hf:{folder}", "prompt")
    (folder / "model.safetensors").write_bytes(b"b" * 32)
    assert ReplyJournal.key(f"hf:{folder}", "prompt") != before  # build-qa asks the new weights again
    assert identity.backend_identity("openai:http://h:1/v1#m") == "openai:http://h:1/v1#m"


IDENTITY_FUNCTIONS = {
    "checkpoint_fingerprint",
    "weights_fingerprint",
    "model_name",
    "computation_key",
    "pixel_hash",
    "backend_identity",
}


def test_the_identity_is_defined_once():
    """No other module defines its own fingerprint, key or leaderboard name (they would drift apart)."""
    twins = []
    packages = ("harness", "tasks", "models", "finedefics_train", "leaderboard")
    for path in (p for package in packages for p in (ROOT / package).rglob("*.py")):
        if path == ROOT / "harness" / "core" / "identity.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in IDENTITY_FUNCTIONS:
                twins.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not twins, twins
