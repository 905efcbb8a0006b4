"""The one "is this a local path" rule (harness.core.paths), used by the runner, the store and submissions."""

from __future__ import annotations

import pytest

from harness.core.paths import looks_like_local_path


@pytest.mark.parametrize("reference", ["/ckpt/model", "./model", "../model", "~/model", ".", ".."])
def test_written_as_a_path_is_local(reference):
    assert looks_like_local_path(reference)


@pytest.mark.parametrize("reference", ["HuggingFaceM4/idefics2-8b", "owner/name", "gpt2"])
def test_hub_ids_are_not_local(reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_local_path(reference)


def test_an_existing_relative_folder_is_local(tmp_path, monkeypatch):
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert looks_like_local_path("owner/name")


def test_the_runner_store_and_submissions_agree(tmp_path, monkeypatch):
    """Each caller takes a reference written as a path as local, even before the folder exists."""
    from harness.core.errors import UserError
    from harness.runner import check_pretrained
    from leaderboard.store import model_name_for
    from models.registry import get_model_spec

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"pretrained=\./missing: no such folder"):
        check_pretrained(get_model_spec("idefics2"), {"pretrained": "./missing"})
    # a local folder is named after itself plus a digest, so two folders called my-tune never merge
    assert model_name_for({"model": "idefics2", "model_args": {"pretrained": "~/ckpt/my-tune"}}).startswith(
        "my-tune@"
    )
    assert model_name_for({"model": "idefics2", "model_args": {"pretrained": "owner/tune"}}) == "owner/tune"
