"""The Gradio app through gradio_client against a live server on 127.0.0.1, plus its handlers directly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.core.errors import UserError
from leaderboard import spec
from leaderboard.app import LeaderboardApp
from leaderboard.store import ResultStore
from leaderboard.submissions import SubmissionPolicy
from tests.leaderboard.lb_factories import make_checkpoint, make_summary

TOKEN = "s3cret-admin-token"
ALL_TASKS = list(spec.TASK_KEYS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A served app on a fresh store; yields (client, store, submission root)."""
    from gradio_client import Client

    from leaderboard.app import serve

    home = tmp_path_factory.mktemp("live")
    root = home / "submissions"
    root.mkdir()
    saved = {
        key: os.environ.get(key) for key in ("HARNESS_HOME", "HARNESS_SUBMISSION_ROOT", "HARNESS_ADMIN_TOKEN")
    }
    os.environ.update(HARNESS_HOME=str(home), HARNESS_SUBMISSION_ROOT=str(root), HARNESS_ADMIN_TOKEN=TOKEN)
    url = f"sqlite:///{home / 'lb.db'}"
    store = ResultStore.open(url)
    store.record_summary(
        make_summary(protocol="foci")
    )  # a reproduced idefics2 bird200 run, as the paper ran it
    port = free_port()
    blocks = serve(host="127.0.0.1", port=port, db_url=url, block=False)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), store, root
    finally:
        blocks.close()
        store.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def table(
    client,
    tasks=ALL_TASKS,
    sizes=(),
    families=(),
    sources=(),
    scorings=(),
    search="",
    sort_by="Average",
    descending=True,
) -> pd.DataFrame:
    records = client.predict(
        list(tasks),
        list(sizes),
        list(families),
        list(sources),
        list(scorings),
        search,
        sort_by,
        descending,
        api_name="/leaderboard_table",
    )
    return pd.DataFrame(records)


@pytest.mark.server
def test_live_table_serves_the_papers_rows(live):
    client, _, _ = live
    frame = table(client)
    assert frame.iloc[0]["Model"] == "Finedefics" and frame.iloc[0]["Average"] == 76.84
    assert set(frame["Source"]) == {"reported", "reproduced"}
    reproduced = frame[frame["Source"] == "reproduced"].iloc[0]
    assert (reproduced["Model ID"], reproduced["Bird-200"]) == ("idefics2", 47.12)


@pytest.mark.server
def test_live_filters_search_and_sort(live):
    client, _, _ = live
    from models.registry import MODELS

    listed = set(
        table(client)["Model ID"]
    )  # registry models without any row (the current MLLMs) are not listed
    small = {name for name in listed if name in MODELS and MODELS[name].params_b < 4}
    assert small  # the paper's PaliGemma, BLIP-2 and InstructBLIP-FlanT5 rows
    assert (
        set(table(client, sizes=["<4B"])["Model ID"]) == small
    )  # registry sizes win over the paper's rounding
    assert set(table(client, families=["Qwen-VL"])["Model ID"]) == {"qwen_vl_chat"}
    assert set(table(client, scorings=["generate"])["Source"]) == {"reproduced"}
    assert set(table(client, search="instructblip")["Model ID"]) == {
        "instructblip_vicuna",
        "instructblip_flant5",
    }
    by_pet = table(client, tasks=["pet37"], sort_by="Pet-37", descending=False)
    assert list(by_pet.columns).count("Dog-120") == 0
    assert by_pet.iloc[0]["Model ID"] == "idefics1"  # 48.51, the lowest Pet-37
    assert by_pet.iloc[0]["Average"] == 48.51


@pytest.mark.server
def test_live_model_detail(live):
    client, _, _ = live
    header, results, comparison, curve, confusions = client.predict("idefics2", "", api_name="/model_detail")
    assert "Idefics2" in header
    results = pd.DataFrame(results["data"], columns=results["headers"])
    assert "47.12" in results["Accuracy (%)"].astype(str).tolist()
    comparison = pd.DataFrame(comparison["data"], columns=comparison["headers"])
    assert comparison.iloc[0].tolist() == ["Bird-200", 47.17, 47.12, "generate", "foci", -0.05]
    confusions = pd.DataFrame(confusions["data"], columns=confusions["headers"])
    assert confusions.iloc[0]["True class"] == "California Gull"


@pytest.mark.server
def test_live_plots(live):
    client, _, _ = live
    by_dataset, versus = client.predict(["finedefics", "idefics2"], api_name="/plots")
    assert by_dataset["type"] == "plotly" and "Finedefics · reported" in by_dataset["plot"]
    assert "Idefics2 · reproduced" in versus["plot"] and "Idefics2 · reported" in versus["plot"]


@pytest.mark.server
def test_live_submit_refusals_and_queue(live):
    client, _, root = live
    outside = make_checkpoint(root.parent / "outside")
    refusal = client.predict(
        str(outside), "idefics2", "", "full", "auto", ["bird200"], "generate", "", api_name="/submit"
    )
    assert refusal.startswith("**Refused:**") and "outside the submission root" in refusal
    folder = make_checkpoint(root / "web-ft")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    assert "pickle weight files" in client.predict(
        str(folder), "idefics2", "", "full", "auto", ["bird200"], "generate", "", api_name="/submit"
    )
    (folder / "pytorch_model.bin").unlink()
    queued = client.predict(
        "web-ft", "idefics2", "", "full", "float32", ["bird200"], "generate", "", api_name="/submit"
    )
    assert queued.startswith("**Queued** as submission #")
    duplicate = client.predict(
        str(folder), "idefics2", "", "full", "float32", ["bird200"], "generate", "", api_name="/submit"
    )
    assert "already submission" in duplicate
    rows = client.predict(["PENDING"], "", api_name="/queue")
    frame = pd.DataFrame(rows["data"], columns=rows["headers"])
    assert frame.iloc[0]["Model"] == "local/web/web-ft"  # anonymous: no address in the model's name either
    assert frame.iloc[0]["Submitter"] == "anonymous (web)"  # no address on the public page
    assert (frame.iloc[0]["Status"], frame.iloc[0]["Tasks"]) == ("PENDING", "bird200")
    admin = client.predict(["PENDING"], TOKEN, api_name="/queue")
    assert pd.DataFrame(admin["data"], columns=admin["headers"]).iloc[0]["Submitter"] == "web-127.0.0.1"


@pytest.mark.server
def test_live_forwarded_for_from_an_untrusted_peer_is_ignored(live):
    """Loopback is not a trusted proxy unless the operator says so: X-Forwarded-For cannot dodge the limit."""
    from gradio_client import Client

    _, store, root = live
    make_checkpoint(root / "xff-ft", seed=11)
    spoofing = Client(live[0].src, headers={"X-Forwarded-For": "203.0.113.9"}, verbose=False)
    queued = spoofing.predict(
        "xff-ft", "idefics2", "", "full", "float32", ["bird200"], "generate", "", api_name="/submit"
    )
    assert queued.startswith("**Queued**"), queued
    from leaderboard.queue import SubmissionQueue

    submitters = {row["submitter"] for row in SubmissionQueue(store).list()}
    assert "web-203.0.113.9" not in submitters and "web-127.0.0.1" in submitters


@pytest.mark.server
def test_live_uploads_are_refused(live):
    import urllib.error
    import urllib.request

    client = live[0]
    boundary = "fgvrboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"x" * 2**20
        + f"\r\n--{boundary}--\r\n".encode()
    )
    upload = urllib.request.Request(
        client.src.rstrip("/") + "/gradio_api/upload",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(upload, timeout=30)
    assert refused.value.code == 413


@pytest.mark.server
def test_live_hidden_models_are_hidden(live):
    client, store, _ = live
    store.record_summary(
        make_summary(
            model_args={"pretrained": "/srv/private/secret-ft"},
            pretrained="/srv/private/secret-ft",
            model_revision="local-sha256:" + "5e" * 16,
        ),
        model_name="secret-ft",
    )
    store.set_hidden("secret-ft", True)
    try:
        from gradio_client.exceptions import AppError

        with pytest.raises(AppError) as caught:
            client.predict("secret-ft", "", api_name="/model_detail")
        assert "unknown model" in str(caught.value)
        with pytest.raises(AppError) as other:
            client.predict("secret-f", "", api_name="/model_detail")
        assert "secret-ft" not in str(other.value)  # not even listed among the known models
        header = client.predict("secret-ft", TOKEN, api_name="/model_detail")[0]
        assert "/srv/private/secret-ft" in header  # the admin sees it, path included
    finally:
        store.set_hidden("secret-ft", False)
    public = client.predict("secret-ft", "", api_name="/model_detail")[0]
    assert "/srv/private" not in public and "a local folder" in public


@pytest.mark.server
def test_live_admin_actions_need_the_token(live):
    client, store, _ = live
    assert (
        client.predict("wrong", "hide model", "idefics1", api_name="/admin")
        == "**Refused:** wrong admin token."
    )
    assert "idefics1" in set(table(client)["Model ID"])
    assert client.predict(TOKEN, "hide model", "idefics1", api_name="/admin").startswith("Done")
    assert "idefics1" not in set(table(client)["Model ID"])
    assert client.predict(TOKEN, "unhide model", "idefics1", api_name="/admin").startswith("Done")
    assert "unknown model 'nope'" in client.predict(TOKEN, "delete model", "nope", api_name="/admin")


@pytest.mark.server
def test_live_app_reads_the_store_at_request_time(live):
    client, store, _ = live
    store.record_summary(
        make_summary(task="car196", accuracy=0.8, protocol="foci")
    )  # the same row as bird200
    row = table(client, sources=["reproduced"]).iloc[0]
    assert (row["Bird-200"], row["Car-196"]) == (47.12, 80.0)


def test_admin_is_disabled_without_a_token(store, monkeypatch):
    monkeypatch.delenv("HARNESS_ADMIN_TOKEN", raising=False)
    assert "disabled" in LeaderboardApp(store).admin("", "hide model", "idefics1")


def test_exports_go_to_a_private_folder_of_each_instance(store, tmp_path):
    first, second = LeaderboardApp(store), LeaderboardApp(store)
    assert first.download_dir != second.download_dir
    assert first.download_dir.stat().st_mode & 0o777 == 0o700
    frame = first.table(ALL_TASKS, [], [], ["reported"], [], "", "Average", True)
    planted = tmp_path / "victim.txt"
    planted.write_text("keep me")
    csv_name = Path(first.export(frame)[0]).name
    Path(first.download_dir, csv_name).unlink()
    Path(first.download_dir, csv_name).symlink_to(planted)  # a link planted where an export goes
    csv_path, _ = first.export(frame)
    assert planted.read_text() == "keep me" and not Path(csv_path).is_symlink()
    assert pd.read_csv(csv_path)["Model ID"].tolist() == frame["Model ID"].tolist()


def test_public_queue_hides_addresses_workers_and_paths(store, monkeypatch):
    from leaderboard.queue import SubmissionQueue
    from leaderboard.submissions import ValidatedSubmission

    monkeypatch.setenv("HARNESS_ADMIN_TOKEN", TOKEN)
    queue = SubmissionQueue(store)
    job_id = queue.submit(
        ValidatedSubmission(
            model_name="local/web/ft",
            checkpoint="/srv/subs/ft",
            is_local=True,
            base="idefics2",
            revision="local-x",
            weights="full",
            precision="auto",
            tasks=("bird200",),
            scoring="generate",
            submitter="web-198.51.100.7",
            size_bytes=1,
        ),
        per_day=5,
    )
    queue.claim("gpu-host-7:4242:abc123", 60)
    queue.fail(job_id, "gpu-host-7:4242:abc123", "bird200: UserError: pretrained=/srv/subs/ft/x: cannot load")
    app = LeaderboardApp(store)
    public = app.queue_table([]).iloc[0]
    text = " ".join(str(value) for value in public.tolist())
    assert "198.51.100.7" not in public["Submitter"] and "gpu-host-7" not in text and "4242" not in text
    assert "/srv/subs" not in text and "…/x" in public["Failure reason"]
    admin = app.queue_table([], TOKEN).iloc[0]
    assert (admin["Submitter"], admin["Worker"]) == ("web-198.51.100.7", "gpu-host-7:4242:abc123")


def test_web_submitters_and_tokens(monkeypatch):
    from leaderboard.app import trusted_proxies, web_submitter

    monkeypatch.delenv("HARNESS_SUBMIT_TOKENS", raising=False)
    assert web_submitter("", "2001:db8::1") == "web-2001.db8..1"
    monkeypatch.setenv("HARNESS_SUBMIT_TOKENS", "alice:tok-alice-123,bob:tok-bob-4567")
    assert web_submitter("tok-bob-4567", "10.0.0.1") == "bob"
    for wrong in ("", "tok-bob", "tok-alice-1234"):
        with pytest.raises(UserError, match="a valid submission token is required"):
            web_submitter(wrong, "10.0.0.1")
    monkeypatch.setenv("HARNESS_SUBMIT_TOKENS", "alice-without-token")
    with pytest.raises(UserError, match="HARNESS_SUBMIT_TOKENS"):
        web_submitter("x", "10.0.0.1")
    monkeypatch.setenv("HARNESS_TRUSTED_PROXIES", "10.0.0.2, 192.168.0.0/16")
    assert trusted_proxies() == "10.0.0.2,192.168.0.0/16"
    monkeypatch.setenv("HARNESS_TRUSTED_PROXIES", "localhost")
    with pytest.raises(UserError, match="'localhost' is not an IP address"):
        trusted_proxies()


def test_averages_of_published_figures_are_exact_and_shown_with_two_decimals(store):
    app = LeaderboardApp(store)
    frame = app.table(ALL_TASKS, [], [], ["reported"], [], "", "Average", True)
    xcomposer = frame[frame["Model ID"] == "internlm_xcomposer2"].iloc[0]
    assert xcomposer["Average"] == 48.47  # (41.47 + 37.42 + 40.53 + 54.25 + 63.23 + 53.89) / 6 = 48.465
    shown = app._table_outputs(ALL_TASKS, [], [], ["reported"], [], "", "Average", True)[0]
    styled = shown.value if hasattr(shown, "value") else shown
    headers, display = styled["headers"], styled["metadata"]["display_value"]
    row = next(r for r, data in zip(display, styled["data"]) if data[headers.index("Model ID")] == "idefics1")
    assert all(len(row[headers.index(c)].split(".")[1]) == 2 for c in ("Average", "Pet-37", "Dog-120"))


def test_long_model_names_are_cut_with_the_full_name_on_hover():
    from leaderboard.app import MODEL_NAME_CHARS, _model_cell

    long_name = "a" * 128
    cell = _model_cell(long_name)
    assert f'title="{long_name}"' in cell and ">" + "a" * (MODEL_NAME_CHARS - 1) + "…<" in cell
    assert (
        _model_cell("<img src=x onerror=alert(1)>")
        == '<span title="&lt;img src=x onerror=alert(1)&gt;">&lt;img src=x onerror=alert(1)&gt;</span>'
    )


def test_downloads_hold_the_table(store, tmp_path):
    app = LeaderboardApp(store, SubmissionPolicy(root=tmp_path), download_dir=tmp_path / "dl")
    frame = app.table(ALL_TASKS, [], [], ["reported"], [], "", "Average", True)
    csv_path, json_path = app.export(frame)
    assert pd.read_csv(csv_path)["Model ID"].tolist() == frame["Model ID"].tolist()
    assert json.loads(Path(json_path).read_text())[0]["Average"] == 76.84
    assert app.export(frame) == (csv_path, json_path)  # unchanged table, same files


@pytest.mark.server
@pytest.mark.subprocess
def test_harness_leaderboard_command_serves_on_loopback(tmp_path):
    import time
    import urllib.request

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "leaderboard",
        "--port",
        str(port),
        "--db-url",
        f"sqlite:///{tmp_path / 'lb.db'}",
    ]
    server = subprocess.Popen(
        command,
        env={**os.environ, "HARNESS_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    assert "leaderboard-table" in response.read().decode()
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.subprocess
def test_importing_the_app_has_no_side_effects(tmp_path):
    home = tmp_path / "home"
    code = "import leaderboard.app, leaderboard.cli, leaderboard.worker, leaderboard.store; print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "HARNESS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "ok", done.stderr
    assert not home.exists()  # no database opened, nothing written
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, leaderboard.worker, leaderboard.cli; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split("'")


def comparison_app(store, tmp_path):
    from leaderboard.importer import import_path
    from tests.leaderboard.lb_factories import make_comparison_runs

    assert import_path(store, make_comparison_runs(tmp_path / "runs")).added == 3
    return LeaderboardApp(store, download_dir=tmp_path / "downloads")


def row_value(app, model: str, source: str) -> str:
    return next(value for _, value in app.row_choices() if json.loads(value)[:2] == [model, source])


def test_paired_comparison_per_dataset_with_its_interval(store, tmp_path):
    from leaderboard import stats

    app = comparison_app(store, tmp_path)
    note, frame = app.compare(
        row_value(app, "idefics2", "reproduced"), row_value(app, "llava15", "reproduced")
    )
    [bird] = frame.to_dict("records")
    key_a, key_b = (
        store.result_frame().query(f"model == '{m}' and source == 'reproduced'")["key"].item()
        for m in ("idefics2", "llava15")
    )
    expected = stats.paired_difference(*store.correctness([key_a, key_b]).values())
    assert bird["Dataset"] == "Bird-200" and bird["Method"] == "paired bootstrap" and bird["Questions"] == 300
    assert bird["Δ A−B (points)"] == round(100 * expected.difference, 2) > 0
    assert bird["95% CI (points)"] == f"{100 * expected.low:+.2f} to {100 * expected.high:+.2f}"
    assert bird["Tied"] == "A better" and "McNemar" in note
    # against the paper's row (no per-question outcomes): unpaired, labelled so
    _, unpaired = app.compare(
        row_value(app, "idefics2", "reproduced"), row_value(app, "idefics2", "reported")
    )
    assert unpaired.iloc[0]["Method"] == "Newcombe (unpaired)"


def test_position_bias_is_flagged_on_the_page_and_in_the_table(store, tmp_path):
    app = comparison_app(store, tmp_path)
    bias = app.bias_table().set_index("Model")
    assert bias.loc["Finedefics", "Flag"].startswith("⚠ biased: D")
    assert bias.loc["Idefics2", "Flag"] == ""
    table = app.table([], [], [], ["reproduced"], [], "", "Average", True).set_index("Model ID")
    assert table.loc["finedefics", "Position bias"].startswith("Car-196: D")


def test_model_and_table_downloads_in_the_export_formats(store, tmp_path):
    import zipfile

    app = comparison_app(store, tmp_path)
    files = [Path(path) for path in app.export_files("idefics2")]
    assert [path.name.rsplit("-", 1)[-1] for path in files] == ["ever.zip", "results.zip", "questions.jsonl"]
    with zipfile.ZipFile(files[0]) as archive:
        names = archive.namelist()
    assert sum(name.endswith("_samples.jsonl") for name in names) == 1 and len(names) == 3  # 2 aggregates
    questions = [json.loads(line) for line in files[2].read_text().splitlines()]
    assert len(questions) == 300 and {q["evaluation_name"] for q in questions} == {"bird200"}
    everything = [Path(path) for path in app.export_files(None)]
    with zipfile.ZipFile(everything[1]) as archive:
        assert len([n for n in archive.namelist() if n.endswith(".eval_results/fgvr.yaml")]) == 3


def test_admin_drops_a_results_file_and_it_imports(store, tmp_path, monkeypatch):
    from tests.leaderboard.lb_factories import LMMS_RESULTS, make_summary

    app = LeaderboardApp(store, download_dir=tmp_path / "downloads")
    upload = tmp_path / "upload.json"
    upload.write_text(json.dumps(make_summary()))
    monkeypatch.delenv("HARNESS_ADMIN_TOKEN", raising=False)
    assert "disabled" in app.admin_import("anything", str(upload))
    monkeypatch.setenv("HARNESS_ADMIN_TOKEN", "admin-secret-1")
    before = len(store.result_frame())
    assert app.admin_import("wrong", str(upload)).startswith("**Refused:**")
    assert len(store.result_frame()) == before and not upload.exists()  # refused, and the upload is gone
    upload.write_text(json.dumps(make_summary()))
    assert (
        app.admin_import("admin-secret-1", str(upload))
        == "Imported: 1 results added, 0 already in the store."
    )
    upload.write_text(LMMS_RESULTS.read_text())
    assert app.admin_import("admin-secret-1", str(upload)).startswith("Imported:")
    upload.write_text('{"not": "a results file"}')
    assert "not a results file" in app.admin_import("admin-secret-1", str(upload))
