"""`harness demo`: the README's main command, fully offline."""

import json

from harness.cli import main


def test_demo_runs_both_scorings(capsys):
    assert main(["demo", "--limit", "6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["scoring"] for row in rows] == ["generate", "loglik"]
    assert all(row["n"] == 6 and row["option_source"] == "choice_file" for row in rows)
