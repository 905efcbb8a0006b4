"""`harness probe build-qa`: reply validation, and builds against OpenAI-compatible servers on 127.0.0.1
(a scripted one, and a real `transformers serve`)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.cli import main
from harness.probes.build_qa import passages, read_knowledge, validate
from tasks.fixtures.datasets import BIRDS
from tasks.knowledge_qa import load_qa_questions, read_question_file
from tasks.registry import get_task

PASSAGE = (
    "The Laysan albatross breeds on Midway Atoll in the Pacific. It feeds mainly on squid at night. "
    "Its wingspan reaches about two metres."
)


def reply(**overrides) -> str:
    value = {
        "question": "What does this object mainly feed on?",
        "options": ["Squid", "Seeds", "Krill", "Carrion"],
        "answer": "A",
        "evidence": "It feeds mainly on squid at night.",
    }
    value.update(overrides)
    return "Sure! ```json\n" + json.dumps(value) + "\n```"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (reply(), None),
        ("I cannot help with that.", "unparseable"),
        (reply(options=["Squid", "Seeds", "Krill"]), "options"),
        (reply(options=["Squid", "squid ", "Krill", "Carrion"]), "options"),
        (reply(answer="E"), "answer_letter"),
        (reply(evidence="It eats fish by day."), "evidence_not_in_text"),
        (reply(answer="B"), "answer_not_supported"),
        (reply(question="What does the Laysan Albatross feed on in this object?"), "names_class"),
        (reply(options=["Squid", "Seeds", "Laysan_albatross chicks", "Carrion"]), "names_class"),
        (reply(question="What does it mainly feed on?"), "no_placeholder"),
    ],
)
def test_validation_rules(text, reason):
    draft, why = validate(text, "Laysan_Albatross", PASSAGE, set())
    assert why == reason and (draft is not None) == (reason is None)
    if draft:
        assert draft.options[draft.answer_index] == "Squid" and draft.evidence.startswith("It feeds")


def test_duplicates_are_rejected_within_a_class():
    seen: set[str] = set()
    assert validate(reply(), "Laysan_Albatross", PASSAGE, seen)[1] is None
    assert (
        validate(reply(question="What does THIS OBJECT mainly feed on ?"), "Laysan_Albatross", PASSAGE, seen)[
            1
        ]
        == "duplicate"
    )


def test_knowledge_from_a_folder_or_jsonl(tmp_path):
    folder = tmp_path / "wiki"
    folder.mkdir()
    (folder / "Laysan Albatross.txt").write_text(PASSAGE)
    assert read_knowledge(folder, BIRDS[:3]) == {"Laysan_Albatross": PASSAGE}
    rows = tmp_path / "wiki.jsonl"
    rows.write_text(
        json.dumps({"classname": "laysan_albatross", "text": "One."})
        + "\n"
        + json.dumps({"classname": "Laysan_Albatross", "text": "Two."})
        + "\n"
    )
    assert read_knowledge(rows, BIRDS[:3]) == {"Laysan_Albatross": "One. Two."}
    (folder / "Dodo.txt").write_text("x")
    with pytest.raises(Exception, match="Dodo.txt: class 'Dodo' is not a class"):
        read_knowledge(folder, BIRDS[:3])
    assert len(passages(PASSAGE, 2)) == 2 and len(passages(PASSAGE, 9)) == 3


class ScriptedLLM(ThreadingHTTPServer):
    """An OpenAI-compatible chat endpoint on 127.0.0.1 answering by the passage it is sent:
    a valid question for the first passage of a class, a question naming the class for the second."""

    def __init__(self):
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ScriptedHandler)


class ScriptedHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        with self.server.lock:
            self.server.prompts.append(prompt)
        name, passage = re.search(r'Passage about the birds "([^"]+)":\n(.*)\n', prompt).groups()
        options = ["fact one holds", "Fact two", "Fact three", "Fact four"]
        if "fact one" in passage:
            text = reply(question="Which statement holds for this object?", options=options, evidence=passage)
        else:
            options[0] = "described at length"
            text = reply(question=f"How is this {name} described?", options=options, evidence=passage)
        payload = json.dumps({"choices": [{"message": {"content": text}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def scripted():
    server = ScriptedLLM()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_build_qa_against_a_local_server_writes_a_bank_that_runs(scripted, cub_root, tmp_path, capsys):
    knowledge = tmp_path / "knowledge.jsonl"
    names = get_task("bird200").read(cub_root).class_names[:3]
    knowledge.write_text(
        "".join(
            json.dumps(
                {
                    "classname": name,
                    "text": (
                        f"The bird {k} is fact one of this entry for sure. The bird is also described at some length here."
                    ),
                }
            )
            + "\n"
            for k, name in enumerate(names)
        )
    )
    out = tmp_path / "bank.jsonl"
    argv = [
        "probe",
        "build-qa",
        "bird200",
        "--source",
        str(cub_root),
        "--knowledge",
        str(knowledge),
        "--llm",
        f"openai:http://127.0.0.1:{scripted.server_port}#m",
        "--out",
        str(out),
        "--per-class",
        "2",
        "--json",
    ]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(scripted.prompts) == info["prompts"] == 6  # two passages per class
    assert all("this object" in p and "Reply with one JSON object" in p for p in scripted.prompts)
    assert info["accepted"] == 3 and info["rejected"]["names_class"] == 3
    records = read_question_file(out)
    assert [r.classname for r in records] == names and all(
        r.options[r.answer_index] == "fact one holds" for r in records
    )
    questions = load_qa_questions(get_task("bird200_wikiqa"), cub_root, out)[0]
    assert len(questions) == sum(get_task("bird200").read(cub_root).class_counts()[n] for n in names)
    assert main(argv) == 0  # resumed from the reply journal: nothing is asked again
    assert (
        len(scripted.prompts) == 6
        and json.loads(capsys.readouterr().out.splitlines()[-1])["resumed_replies"] == 6
    )


def test_build_qa_refuses_bad_input_before_asking(cub_root, tmp_path):
    assert (
        main(
            [
                "probe",
                "build-qa",
                "bird201",
                "--source",
                str(cub_root),
                "--knowledge",
                str(tmp_path),
                "--llm",
                "hf:x",
                "--out",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "probe",
                "build-qa",
                "bird200",
                "--source",
                str(cub_root),
                "--knowledge",
                str(tmp_path),
                "--llm",
                "gpt4",
                "--out",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 2
    )


@pytest.mark.slow  # starts `transformers serve`
def test_build_qa_against_transformers_serve(cub_root, tmp_path, capsys):
    from models.fixtures.serve import transformers_serve
    from models.fixtures.tiny_chat_lm import build_tiny_chat_lm

    chat = build_tiny_chat_lm(tmp_path / "tiny-chat")
    names = get_task("bird200").read(cub_root).class_names[:2]
    knowledge = tmp_path / "k.jsonl"
    knowledge.write_text("".join(json.dumps({"classname": n, "text": PASSAGE}) + "\n" for n in names))
    out = tmp_path / "bank.jsonl"
    with transformers_serve(chat) as url:
        code = main(
            [
                "probe",
                "build-qa",
                "bird200",
                "--source",
                str(cub_root),
                "--knowledge",
                str(knowledge),
                "--llm",
                f"openai:{url}#{chat}",
                "--out",
                str(out),
                "--per-class",
                "2",
                "--max-new-tokens",
                "16",
                "--json",
            ]
        )
    replies = [json.loads(line)["reply"] for line in Path(f"{out}.replies.jsonl").read_text().splitlines()]
    assert len(replies) == 4  # the random tiny model's replies were received and judged
    captured = capsys.readouterr()
    if code == 2:  # the random model wrote no valid question: refused, and no empty bank written
        assert "no question accepted (0 of 4" in captured.err and not out.exists()
        return
    assert code == 0
    info = json.loads(captured.out)
    assert info["prompts"] == 4 and info["accepted"] + sum(info["rejected"].values()) == 4
    assert out.read_text().count("\n") == info["accepted"]
