"""An interrupted run keeps its answered requests; the same command resumes from them."""

from __future__ import annotations

import json

from harness.cli import main
from harness.journal import ResponseJournal
from models.idefics2 import Idefics2FGVR


def test_interrupted_run_resumes_from_its_journal(
    capsys, monkeypatch, tmp_path, tiny_idefics2, cub_root, cub_choices, harness_home
):
    monkeypatch.setattr(ResponseJournal, "chunk_size", 8)
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={tiny_idefics2}",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--scoring",
        "loglik",
        "--json",
        "--no-record",
    ]
    scored = []
    original = Idefics2FGVR.loglikelihood

    def flaky(self, requests):
        if len(scored) >= 16:
            raise RuntimeError("out of memory")
        scored.extend(requests)
        return original(self, requests)

    monkeypatch.setattr(Idefics2FGVR, "loglikelihood", flaky)
    assert main([*args, "--output-dir", str(tmp_path / "first")]) == 1
    err = capsys.readouterr().err
    assert "16 responses are saved" in err and "re-run the same command to resume" in err

    def counting(self, requests):
        scored.extend(requests)
        return original(self, requests)

    scored.clear()
    monkeypatch.setattr(Idefics2FGVR, "loglikelihood", counting)
    assert main([*args, "--output-dir", str(tmp_path / "second")]) == 0
    out = capsys.readouterr()
    assert "resuming: 16 responses" in out.err
    line = json.loads(out.out.strip().splitlines()[-1])
    total = 4 * line["n"]
    assert len(scored) == total - 16
    assert not list((harness_home / "journals").glob("*.jsonl"))  # a finished run leaves no journal

    assert main([*args, "--output-dir", str(tmp_path / "fresh")]) == 0
    fresh = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    resumed_resps = [json.loads(r)["resps"] for r in open(line["samples_file"])]
    fresh_resps = [json.loads(r)["resps"] for r in open(fresh["samples_file"])]
    assert resumed_resps == fresh_resps


def test_weights_rewritten_in_place_do_not_resume_from_the_old_answers(
    capsys, monkeypatch, tmp_path, tiny_idefics2, cub_root, cub_choices
):
    """The journal is keyed by the checkpoint's content: same path, same file sizes, other weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_idefics2, checkpoint)
    monkeypatch.setattr(ResponseJournal, "chunk_size", 8)
    args = [
        "run",
        "--model",
        "idefics2",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={checkpoint}",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--scoring",
        "loglik",
        "--no-record",
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    scored = []
    original = Idefics2FGVR.loglikelihood

    def flaky(self, requests):
        if len(scored) >= 16:
            raise RuntimeError("out of memory")
        scored.extend(requests)
        return original(self, requests)

    monkeypatch.setattr(Idefics2FGVR, "loglikelihood", flaky)
    assert main(args) == 1
    capsys.readouterr()
    weights = next(checkpoint.glob("*.safetensors"))
    size = weights.stat().st_size
    tensors = load_file(str(weights))
    save_file(
        {name: tensor + 0.5 if tensor.is_floating_point() else tensor for name, tensor in tensors.items()},
        str(weights),
        metadata={"format": "pt"},
    )
    assert weights.stat().st_size == size
    scored.clear()
    monkeypatch.setattr(
        Idefics2FGVR,
        "loglikelihood",
        lambda self, requests: scored.extend(requests) or original(self, requests),
    )
    assert main(args) == 0
    assert "resuming" not in capsys.readouterr().err
    assert len(scored) > 16  # every request answered by the new weights, none taken from the journal


def test_the_fingerprint_follows_every_rewrite(tmp_path, monkeypatch):
    """A file's digest is remembered only while its stat (ctime included) is unchanged."""
    import os
    import time

    from harness.core import identity as provenance

    later = time.time_ns() + 10 * 10**9
    monkeypatch.setattr(provenance.time, "time_ns", lambda: later)  # every file counts as settled
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    first = provenance.checkpoint_fingerprint(tmp_path)
    assert any(key[0] == str(weights.resolve()) for key in provenance._FILE_DIGESTS)  # remembered
    assert provenance.checkpoint_fingerprint(tmp_path) == first
    stat = weights.stat()
    time.sleep(0.02)
    with open(weights, "r+b") as handle:  # same inode, same size; mtime put back: only ctime moves
        handle.write(b"b")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert provenance.checkpoint_fingerprint(tmp_path) != first
