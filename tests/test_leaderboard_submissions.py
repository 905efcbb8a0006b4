"""Submission validation: every refusal, each with its reason, and what a valid submission becomes."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from pathlib import Path

import pytest

from leaderboard.queue import SubmissionQueue, submit_checkpoint
from leaderboard.submissions import (
    ROOT_ENV,
    SubmissionPolicy,
    SubmissionRefused,
    SubmissionRequest,
    validate_submission,
)
from tests.leaderboard.lb_factories import make_checkpoint

CODE = "class MyModel:\n    pass\n"


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    return folder


@pytest.fixture
def policy(root):
    return SubmissionPolicy(root=root, max_bytes=10 * 2**20, per_day=3)


@pytest.fixture
def queue(store):
    return SubmissionQueue(store)


def request(model, **kw) -> SubmissionRequest:
    return SubmissionRequest(
        model=str(model),
        base=kw.pop("base", "idefics2"),
        tasks=kw.pop("tasks", ("bird200",)),
        submitter=kw.pop("submitter", "alice"),
        **kw,
    )


def refused(check: str, req: SubmissionRequest, policy: SubmissionPolicy, match: str, **kw):
    with pytest.raises(SubmissionRefused, match=match) as caught:
        validate_submission(req, policy, **kw)
    assert caught.value.check == check
    return caught.value


def test_a_valid_local_checkpoint(root, policy):
    folder = make_checkpoint(root / "my-ft")
    valid = validate_submission(request(folder, precision="bfloat16"), policy)
    assert (valid.model_name, valid.checkpoint, valid.is_local) == (
        "local/alice/my-ft",
        str(folder.resolve()),
        True,
    )
    assert valid.revision.startswith("local-") and valid.size_bytes > 0
    make_checkpoint(root / "other", seed=1)
    assert (
        validate_submission(request(root / "other"), policy).revision != valid.revision
    )  # content, not name


def test_an_adapter(root, policy):
    base = make_checkpoint(root / "base")
    folder = make_checkpoint(root / "my-lora", weights="adapter", base=str(base))
    valid = validate_submission(request(folder, weights="adapter"), policy)
    assert (valid.weights, valid.adapter_base) == ("adapter", str(base.resolve()))
    refused(
        "safetensors",
        request(make_checkpoint(root / "full"), weights="adapter"),
        policy,
        "no adapter_model.safetensors",
    )


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ("not a hub id", "neither a folder in the submission root nor a hub id"),
        ("org/name/extra", "neither a folder in the submission root nor a hub id"),
        ("-org/name", "neither a folder in the submission root nor a hub id"),
    ],
)
def test_name_format(policy, model, match):
    refused("name", request(model), policy, match)


def test_local_folder_name_format_and_reserved_names(root, policy):
    refused("name", request(make_checkpoint(root / "bad name!")), policy, "is not a model name")
    # a folder called like a registry model is named in the submitter's namespace, never as the registry row
    assert (
        validate_submission(request(make_checkpoint(root / "idefics2")), policy).model_name
        == "local/alice/idefics2"
    )


def test_path_outside_the_root(tmp_path, policy):
    outside = make_checkpoint(tmp_path / "elsewhere")
    refused("root", request(outside), policy, "outside the submission root")


def test_symlinked_folder_pointing_outside_the_root(tmp_path, root, policy):
    outside = make_checkpoint(tmp_path / "elsewhere")
    (root / "innocent").symlink_to(outside, target_is_directory=True)
    error = refused("root", request(root / "innocent"), policy, "innocent is outside the submission root")
    assert "elsewhere" not in str(error)  # where the link points is not told


def test_symlinked_file_pointing_outside_the_root(tmp_path, root, policy):
    folder = make_checkpoint(root / "sneaky")
    secret = tmp_path / "secret.safetensors"
    (folder / "model.safetensors").rename(secret)
    (folder / "model.safetensors").symlink_to(secret)
    error = refused(
        "root", request(folder), policy, "sneaky/model.safetensors links outside the submission root"
    )
    assert "secret" not in str(error)


def test_missing_path_and_missing_root(tmp_path, root, policy):
    refused("path", request(root / "nothing-here"), policy, "does not exist")
    refused("path", request(make_checkpoint(root / "ok") / "model.safetensors"), policy, "is not a folder")
    no_root = SubmissionPolicy(root=tmp_path / "no-root")
    refused(
        "root",
        request(root / "ok"),
        no_root,
        f"root does not exist; the operator must create it or set {ROOT_ENV}",
    )


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt", "weights.ckpt", "sub/extra.pkl"])
def test_pickle_files_are_refused_without_being_opened(root, policy, pickle_name):
    folder = make_checkpoint(root / "pickled")
    (folder / pickle_name).parent.mkdir(parents=True, exist_ok=True)
    (folder / pickle_name).write_bytes(b"\x80\x04 not to be unpickled")
    refused("safetensors", request(folder), policy, "pickle weight files .*never loaded")


def test_no_weights_or_a_fake_safetensors_file(root, policy):
    folder = make_checkpoint(root / "empty")
    (folder / "model.safetensors").unlink()
    refused("safetensors", request(folder), policy, "has no \\*.safetensors weights")
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    refused("safetensors", request(folder), policy, "not a readable safetensors file")


def test_config_missing_or_unreadable(root, policy):
    folder = make_checkpoint(root / "noconfig")
    (folder / "config.json").unlink()
    refused("config", request(folder), policy, "has no config.json")
    (folder / "config.json").write_text("{not json")
    refused("config", request(folder), policy, "config.json is not readable JSON")
    (folder / "config.json").write_text("[1, 2]")
    refused("config", request(folder), policy, "is not a JSON object")
    (folder / "config.json").write_text("{}")
    refused("config", request(folder), policy, "has no model_type")


def remote_code_checkpoint(folder: Path, auto_map: dict) -> Path:
    make_checkpoint(folder, config={"model_type": "qwen", "auto_map": auto_map})
    (folder / "modeling_my_vlm.py").write_text(CODE)
    return folder


def test_remote_code_needs_its_hash_allow_listed(root, policy):
    folder = remote_code_checkpoint(root / "custom", {"AutoModel": "modeling_my_vlm.MyModel"})
    digest = hashlib.sha256(CODE.encode()).hexdigest()
    error = refused("remote_code", request(folder), policy, "needs remote code that is not allow-listed")
    assert digest in str(error)
    allowed = SubmissionPolicy(root=root, remote_code_allowlist=frozenset({digest}))
    assert (
        validate_submission(request(folder, base="qwen_vl_chat"), allowed).model_name == "local/alice/custom"
    )
    (folder / "extra.py").write_text("import os\n")  # a second, unreviewed file
    refused("remote_code", request(folder, base="qwen_vl_chat"), allowed, "extra.py sha256=")


def test_remote_code_from_another_repository_is_never_allowed(root, policy):
    folder = remote_code_checkpoint(root / "custom", {"AutoModel": "someone/repo--modeling.MyModel"})
    refused("remote_code", request(folder), policy, "loads code from another repository")


def test_unknown_architecture_without_declared_code(root, policy):
    folder = make_checkpoint(root / "mystery", config={"model_type": "not_in_transformers"})
    refused(
        "remote_code", request(folder), policy, "'not_in_transformers' is not a transformers architecture"
    )


def test_unknown_base_and_bad_options(root, policy):
    folder = make_checkpoint(root / "ok")
    refused(
        "base",
        request(folder, base="idefic2"),
        policy,
        "unknown base architecture 'idefic2'. Did you mean 'idefics2'",
    )
    refused("options", request(folder, precision="int3"), policy, "--precision must be one of")
    refused("options", request(folder, weights="lora"), policy, "--weights must be one of")
    refused("options", request(folder, tasks=("bird201",)), policy, "unknown task 'bird201'")
    refused("options", request(folder, tasks=()), policy, "at least one task")
    refused("name", request(folder, revision="../../etc"), policy, "is not a branch, tag or commit")


def test_size_limit(root, policy):
    folder = make_checkpoint(root / "huge")
    (folder / "model-00002.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with open(folder / "model-00002.safetensors", "ab") as handle:
        handle.truncate(11 * 2**20)  # sparse: 11 MiB on paper, nothing on disk
    refused("size", request(folder), policy, "holds 11.0 MiB; the limit is 10.0 MiB")


def test_hub_checkpoints_are_checked_through_the_hub(policy):
    class FakeHub:
        def __init__(self, repo, revision):
            self.where = f"{repo}@{revision or 'main'}"

        def files(self):
            return {"config.json": 100, "model.safetensors": 1000, "pytorch_model.bin": 1000}

        def read_text(self, name):
            return json.dumps({"model_type": "idefics2"})

        def safetensors_header(self, name):
            return {}

    refused(
        "safetensors",
        request("org/model", revision="v1"),
        policy,
        "org/model@v1 has pickle weight files",
        open_hub=FakeHub,
    )


def test_duplicates_are_refused_until_the_first_one_failed(root, policy, queue):
    folder = make_checkpoint(root / "dup")
    first, _ = submit_checkpoint(queue, request(folder, precision="bfloat16"), policy)
    with pytest.raises(SubmissionRefused, match=f"already submission #{first} \\(PENDING\\)") as caught:
        submit_checkpoint(queue, request(folder, precision="bfloat16", submitter="bob"), policy)
    assert caught.value.check == "duplicate"
    submit_checkpoint(queue, request(folder, precision="float16"), policy)  # another precision is another run
    job = queue.claim("w", 60)
    queue.fail(job.id, "w", "boom")
    submit_checkpoint(queue, request(folder, precision="bfloat16"), policy)  # a failed one may be retried


def test_rate_limit_per_submitter(root, policy, queue):
    for index in range(3):
        submit_checkpoint(queue, request(make_checkpoint(root / f"m{index}", seed=index)), policy)
    with pytest.raises(
        SubmissionRefused, match="alice has made 3 submissions in the last 24 hours"
    ) as caught:
        submit_checkpoint(queue, request(make_checkpoint(root / "m3", seed=3)), policy)
    assert caught.value.check == "rate_limit"
    submit_checkpoint(queue, request(root / "m3", submitter="bob"), policy)


def test_policy_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    for name in (
        ROOT_ENV,
        "HARNESS_SUBMISSION_MAX_GB",
        "HARNESS_SUBMISSIONS_PER_DAY",
        "HARNESS_REMOTE_CODE_ALLOWLIST",
    ):
        monkeypatch.delenv(name, raising=False)
    assert SubmissionPolicy.from_env().root == tmp_path / "submissions"
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "r"))
    monkeypatch.setenv("HARNESS_SUBMISSION_MAX_GB", "0.5")
    monkeypatch.setenv("HARNESS_SUBMISSIONS_PER_DAY", "2")
    monkeypatch.setenv("HARNESS_REMOTE_CODE_ALLOWLIST", "AB, cd")
    policy = SubmissionPolicy.from_env()
    assert (policy.root, policy.max_bytes, policy.per_day) == (tmp_path / "r", 2**29, 2)
    assert policy.remote_code_allowlist == {"ab", "cd"}


def test_submit_cli_prints_the_refusal_as_json(root, db_url, monkeypatch, capsys):
    from tests.leaderboard.lb_cli import run_cli

    monkeypatch.setenv(ROOT_ENV, str(root))
    folder = make_checkpoint(root / "cli-ft")
    args = [
        "submit",
        "--db-url",
        db_url,
        "--model",
        str(folder),
        "--base",
        "idefics2",
        "--tasks",
        "bird200",
        "--precision",
        "float32",
        "--json",
    ]
    assert run_cli(args) == 0
    queued = json.loads(capsys.readouterr().out)
    assert (queued["status"], queued["model_name"], queued["tasks"]) == (
        "PENDING",
        f"local/{getpass.getuser()}/cli-ft",
        ["bird200"],
    )
    assert run_cli(args) == 2
    refusal = json.loads(capsys.readouterr().out)
    assert refusal["status"] == "REFUSED" and refusal["check"] == "duplicate"
    assert run_cli(args[:-1]) == 2  # without --json: the message on stderr, exit code 2
    assert "already submission" in capsys.readouterr().err
    assert os.path.exists(folder)


def test_hub_ids_are_refused_with_the_hubs_reason_when_it_cannot_be_reached(policy, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refused(
        "hub",
        request("someone/some-model"),
        policy,
        "cannot read someone/some-model@main on the Hugging Face hub",
    )


# --- the adapter's base, the architecture, odd files (issue 9, items 5 and 6) -------------------------


def test_an_adapters_base_passes_the_same_rules(tmp_path, root, policy):
    outside = make_checkpoint(tmp_path / "outside-base")
    refused(
        "root",
        request(make_checkpoint(root / "a1", weights="adapter", base=str(outside)), weights="adapter"),
        policy,
        "outside-base is outside the submission root",
    )
    refused(
        "config",
        request(make_checkpoint(root / "a2", weights="adapter", base="../up"), weights="adapter"),
        policy,
        "neither an absolute folder inside the submission root nor a hub id",
    )
    llava = make_checkpoint(root / "llava-base", config={"model_type": "llava"})
    refused(
        "base",
        request(make_checkpoint(root / "a3", weights="adapter", base=str(llava)), weights="adapter"),
        policy,
        "'llava' checkpoint, but --base idefics2 loads idefics2",
    )
    pickled = make_checkpoint(root / "pickled-base")
    (pickled / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    refused(
        "safetensors",
        request(make_checkpoint(root / "a4", weights="adapter", base=str(pickled)), weights="adapter"),
        policy,
        "pickle weight files",
    )
    no_base = make_checkpoint(root / "a5", weights="adapter")
    (no_base / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    refused("config", request(no_base, weights="adapter"), policy, "records no base_model_name_or_path")
    good = make_checkpoint(root / "good-base")
    refused(
        "base",
        request(
            make_checkpoint(root / "a6", weights="adapter", base=str(good)), weights="adapter", base="llava15"
        ),
        policy,
        "adapters are evaluated on finedefics or idefics2 bases only",
    )


def test_a_hub_base_is_checked_through_the_hub(root, policy):
    opened = []

    class FakeHub:
        def __init__(self, repo, revision):
            opened.append(repo)
            self.where = repo

        def files(self):
            return {"config.json": 10, "model.safetensors": 100}

        def read_text(self, name):
            return json.dumps({"model_type": "idefics2"})

        def safetensors_header(self, name):
            return {}

    folder = make_checkpoint(root / "lora", weights="adapter", base="HuggingFaceM4/idefics2-8b")
    valid = validate_submission(request(folder, weights="adapter"), policy, open_hub=FakeHub)
    assert valid.adapter_base == "HuggingFaceM4/idefics2-8b" and opened == ["HuggingFaceM4/idefics2-8b"]


def test_the_config_must_be_the_base_architecture(root, policy):
    folder = make_checkpoint(root / "llava-ft", config={"model_type": "llava"})
    refused("base", request(folder), policy, "'llava' checkpoint, but --base idefics2 loads idefics2")
    assert validate_submission(request(folder, base="llava15"), policy).base == "llava15"


def test_the_duplicate_key_includes_the_base(root, policy, queue):
    folder = make_checkpoint(root / "ft")
    submit_checkpoint(queue, request(folder), policy)
    submit_checkpoint(queue, request(folder, base="finedefics"), policy)  # another base: another evaluation
    with pytest.raises(SubmissionRefused, match="already submission"):
        submit_checkpoint(queue, request(folder, base="finedefics"), policy)


def test_a_name_held_by_other_weights_is_refused(root, policy, queue):
    folder = make_checkpoint(root / "ft")
    submit_checkpoint(queue, request(folder), policy)
    make_checkpoint(folder, seed=7)  # new weights in the same folder
    with pytest.raises(SubmissionRefused, match="local/alice/ft is taken by other weights") as caught:
        submit_checkpoint(queue, request(folder), policy)
    assert caught.value.check == "name"
    bob = validate_submission(request(make_checkpoint(root / "bob" / "ft", seed=3), submitter="bob"), policy)
    assert bob.model_name == "local/bob/ft"  # the same folder name for another submitter: another model


def test_broken_links_loops_and_odd_bytes_are_refusals(root, policy):
    folder = make_checkpoint(root / "dangling")
    (folder / "extra.safetensors").symlink_to(root / "gone.safetensors")
    refused(
        "path", request(folder), policy, "dangling/extra.safetensors is a broken symlink or a symlink loop"
    )
    looped = make_checkpoint(root / "looped")
    (looped / "a").symlink_to(looped / "b")
    (looped / "b").symlink_to(looped / "a")
    refused("path", request(looped), policy, "is a broken symlink or a symlink loop")
    (root / "loop-top").symlink_to(root / "loop-top")
    refused("path", request(root / "loop-top"), policy, "cannot be resolved")
    linked_dir = make_checkpoint(root / "linked-dir")
    (linked_dir / "sub").symlink_to(make_checkpoint(root / "elsewhere"), target_is_directory=True)
    refused("path", request(linked_dir), policy, "is a symlinked folder")
    code = remote_code_checkpoint(root / "latin1", {"AutoModel": "modeling_my_vlm.MyModel"})
    (code / "modeling_my_vlm.py").write_bytes("# caf\xe9\n".encode("latin-1"))
    refused("remote_code", request(code, base="qwen_vl_chat"), policy, "not allow-listed")
    bad_config = make_checkpoint(root / "latin1-config")
    (bad_config / "config.json").write_bytes(b'{"model_type": "caf\xe9"}')
    refused("config", request(bad_config), policy, "config.json is not readable JSON")


def test_a_relative_name_is_a_folder_in_the_root_and_nothing_outside_is_probed(root, policy, tmp_path):
    make_checkpoint(root / "mine")
    assert validate_submission(request("mine"), policy).model_name == "local/alice/mine"
    for probe in ("/etc", "/etc/passwd", "/no/such/place", "../" + tmp_path.name, "~"):
        error = refused("root", request(probe), policy, "is outside the submission root")
        assert "does not exist" not in str(error) and str(root) not in str(error)


def test_submit_json_for_every_refusal(root, db_url, monkeypatch, capsys):
    from tests.leaderboard.lb_cli import run_cli

    monkeypatch.setenv(ROOT_ENV, str(root))
    looped = make_checkpoint(root / "looped")
    (looped / "a").symlink_to(looped / "a")
    assert (
        run_cli(["submit", "--db-url", db_url, "--model", str(looped), "--base", "idefics2", "--json"]) == 2
    )
    assert json.loads(capsys.readouterr().out)["check"] == "path"
    monkeypatch.setenv("HARNESS_SUBMISSIONS_PER_DAY", "abc")
    assert (
        run_cli(["submit", "--db-url", db_url, "--model", str(looped), "--base", "idefics2", "--json"]) == 2
    )
    assert json.loads(capsys.readouterr().out)["status"] == "REFUSED"
