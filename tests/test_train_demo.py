"""`harness train demo`: a tiny Finedefics trained offline, held-out accuracy before and after."""

from __future__ import annotations

import json

import pytest

from harness.cli import main


@pytest.mark.slow
def test_train_demo_lifts_held_out_accuracy(capsys):
    assert main(["train", "demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["scoring"] for row in result["after"]] == ["generate", "loglik_name"]
    for before, after in zip(result["before"], result["after"], strict=True):
        assert after["n"] == before["n"] == 32
        assert after["accuracy"] >= 0.75 and after["accuracy"] > before["accuracy"] + 0.25
