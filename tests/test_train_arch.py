"""The architecture adapter: global representations and the one-forward text batch, on tiny real models."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoProcessor

from finedefics_train.arch import ADAPTERS, generation_logits, image_representation, text_representations
from finedefics_train.training_data import SequenceBuilder, StageOneCollator, StageTwoCollator, load_stage

ARCHS = ("idefics2", pytest.param("llava15", marks=pytest.mark.slow))


@pytest.fixture(scope="module")
def training_data(tmp_path_factory):
    from finedefics_train.fixtures import make_training_data

    return make_training_data(
        tmp_path_factory.mktemp("arch-data"), n_classes=4, per_class_train=2, per_class_test=1
    )


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    from models.fixtures.tiny_models import ARCHS as TINY

    path = tmp_path_factory.mktemp("arch-models") / request.param
    from models.fixtures.tiny_models import build_tiny_model

    build_tiny_model(request.param, path)
    model = TINY[request.param].model_class.from_pretrained(path).eval()
    return ADAPTERS[request.param], model, AutoProcessor.from_pretrained(path)


def test_one_padded_text_forward_equals_one_forward_per_text(tiny):
    adapter, model, processor = tiny
    builder = SequenceBuilder(processor, adapter)
    texts = ["Black footed Albatross", "a red circle on a grey background, seen from the side", "Ani"]
    ids, lengths = builder.text_batch(texts)
    assert ids.shape[0] == 3 and int(lengths.max()) == ids.shape[1]
    with torch.no_grad():
        batched = text_representations(adapter, model, ids, lengths)
        for i, text in enumerate(texts):
            one_ids, one_len = builder.text_batch([text])
            assert one_ids[0, one_len[0] - 1] == processor.tokenizer.eos_token_id  # the text ends in EOS
            alone = text_representations(adapter, model, one_ids, one_len)[0]
            # last layer, last (EOS) token, computed directly through the language model
            direct = adapter.language_model(model)(input_ids=one_ids).last_hidden_state[0, -1]
            torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(alone, direct, atol=1e-5, rtol=1e-4)


def test_image_representation_and_generation_share_the_visual_tokens(tiny, training_data):
    adapter, model, processor = tiny
    rows = [load_stage(training_data.data_dir, "stage2")[i] for i in range(2)]
    batch = StageTwoCollator(SequenceBuilder(processor, adapter))(rows)
    with torch.no_grad():
        visual = adapter.visual_tokens(model, batch)
        assert visual.shape[0] == 2 and visual.shape[2] == model.config.text_config.hidden_size
        # the generation logits equal the model's own forward with pixels (its own image merge)
        ours = generation_logits(adapter, model, visual, batch["input_ids"], batch["attention_mask"])
        pixels = {k: v for k, v in batch.items() if k.startswith("pixel")}
        theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **pixels).logits
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
        image = image_representation(adapter, model, visual, processor.tokenizer.eos_token_id)
        eos = model.get_input_embeddings()(torch.tensor([[processor.tokenizer.eos_token_id]]))
        direct = adapter.language_model(model)(
            inputs_embeds=torch.cat([visual[:1], eos], 1)
        ).last_hidden_state[0, -1]
        torch.testing.assert_close(image[0], direct, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(image[0], image[1])  # the image matters


def test_stage_one_batch_layout_and_prompt_masking(tiny, training_data):
    adapter, _, processor = tiny
    rows = [load_stage(training_data.data_dir, "stage1")[i] for i in range(3)]
    batch = StageOneCollator(SequenceBuilder(processor, adapter))(rows)
    # categories, negative categories, descriptions, negative descriptions: 3 + 9 + 3 + 9 texts, one block
    assert batch["text_ids"].shape[0] == 24 and int(batch["n_negatives"]) == 3
    labelled = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert labelled.strip().startswith(rows[0]["attribute"][:20]) and adapter.end_of_turn in labelled
    reference = StageOneCollator(SequenceBuilder(processor, adapter, mask_prompt=False))(rows)
    assert int((reference["labels"] != -100).sum()) > int((batch["labels"] != -100).sum())
    # the reference's labels: every non-padding token, the image placeholders included
    expected = reference["input_ids"].masked_fill(reference["attention_mask"] == 0, -100)
    assert torch.equal(reference["labels"], expected)
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((reference["labels"] == image_token).sum()) > 0
    # category ids: equal names, equal ids, for the rows and their negatives alike
    names = [row["category"] for row in rows] + [c for row in rows for c in row["neg_categories"][:3]]
    ids = torch.cat([batch["category_labels"], batch["neg_category_labels"].reshape(-1)]).tolist()
    assert batch["neg_category_labels"].shape == (3, 3)
    assert all((ids[i] == ids[j]) == (names[i] == names[j]) for i in range(len(ids)) for j in range(len(ids)))


def test_recipe_batches_one_stage_and_simple_negatives(tiny, training_data):
    from finedefics_train.config import load_config
    from finedefics_train.model import FinedeficsTrainingModel, stage_losses
    from finedefics_train.trainer import JointCollator, wrap_lora

    adapter, model, processor = tiny
    stage1, stage2 = (
        load_stage(training_data.data_dir, "stage1"),
        load_stage(training_data.data_dir, "stage2"),
    )
    rows = [stage1[i] for i in range(4)]
    descriptions = dict(zip(stage1["category"], stage1["attribute"], strict=True))
    simple = StageOneCollator(SequenceBuilder(processor, adapter), random_negatives=True,
                              descriptions_by_category=descriptions, seed=1)  # fmt: skip
    for row in rows:
        categories, attributes = simple.negatives(row)
        assert row["category"] not in categories and len(set(categories)) == 3
        assert attributes == [descriptions[c] for c in categories]
    joint = JointCollator(StageOneCollator(SequenceBuilder(processor, adapter)),
                          StageTwoCollator(SequenceBuilder(processor, adapter)), stage2)(rows)  # fmt: skip
    assert {"instr_input_ids", "instr_labels", "labels", "text_ids"} <= set(joint)
    config = load_config("tiny_cpu")
    trainable = FinedeficsTrainingModel(wrap_lora(copy.deepcopy(model), adapter, config, None), adapter,
                                        stage_losses("stage1", config.loss.loss_options()),
                                        processor.tokenizer.eos_token_id)  # fmt: skip
    terms = trainable(**joint)
    assert {"gen_loss", "oac_loss", "acc_loss", "ccc_loss", "lm_loss"} <= set(terms)
    expected = sum(value for key, value in terms.items() if key.endswith("_loss"))
    torch.testing.assert_close(terms["loss"], expected)
