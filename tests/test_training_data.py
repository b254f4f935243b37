"""Collation, packing and model preparation, on real (tiny) models."""

from __future__ import annotations

import pytest
import torch

from pipeline.training.data import (
    IGNORE, ConversationEncoder, Encoded, PaddingCollator, pack, padding_share, plain_rows,
)
from pipeline.training.modeling import dropout_values, force_dropout, load_for_training
from tests.llm_fixtures import tiny_model_dir  # noqa: F401 - pytest fixture


def conversations(n: int) -> list[list[dict]]:
    """``n`` short conversations of varied lengths."""
    return [[{"role": "user", "content": f"Return {i} times x" + " please" * (i % 5)},
             {"role": "assistant", "content": f"def f(x):\n    return {i} * x" + "  # ok" * (i % 3)}]
            for i in range(n)]


@pytest.fixture
def encoder(tiny_model_dir):  # noqa: F811 - the fixture
    """An instruction-format encoder on the tiny tokenizer."""
    from transformers import AutoTokenizer

    return ConversationEncoder(AutoTokenizer.from_pretrained(tiny_model_dir), "instruction", use_default_system=False)


def test_collator_pads_inputs_labels_and_mask():
    collator = PaddingCollator(pad_token_id=0)
    batch = collator([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert PaddingCollator(0, pad_to_multiple_of=8)([{"input_ids": [1], "labels": [1]}])["input_ids"].shape == (1, 8)


def test_pack_fills_rows_first_fit_decreasing_and_restarts_positions():
    examples = [Encoded([i] * n, [i] * n, "kept", n) for i, n in enumerate([6, 3, 5, 2, 4], start=1)]
    rows = pack(examples, max_length=8)
    assert sorted(len(r["input_ids"]) for r in rows) == [4, 8, 8]  # 6+2, 5+3, 4
    assert sum(len(r["input_ids"]) for r in rows) == 20
    for row in rows:
        assert len(row["input_ids"]) <= 8
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        segments = [row["input_ids"][a:b] for a, b in zip(starts, starts[1:] + [len(row["input_ids"])])]
        assert all(len(set(seg)) == 1 for seg in segments)  # each segment is one whole example
    batch = PaddingCollator(0)(rows)
    assert "attention_mask" not in batch and batch["position_ids"].shape == batch["input_ids"].shape


def test_packing_cuts_padding(encoder):
    examples = [encoder.encode(m, 256) for m in conversations(24)]
    collator = PaddingCollator(encoder.tokenizer.pad_token_id)
    plain = plain_rows(examples)
    padded = padding_share([plain[i : i + 4] for i in range(0, len(plain), 4)], collator)
    packed_rows = pack(examples, 256)
    packed = padding_share([packed_rows[i : i + 4] for i in range(0, len(packed_rows), 4)], collator)
    assert 0 < packed < padded


def test_packed_row_loss_equals_separate_losses(encoder, tiny_model_dir):  # noqa: F811 - the fixture
    """Packed conversations do not attend to each other: the summed loss is the same as run one by one."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model.config.use_cache = False
    examples = [encoder.encode(m, 256) for m in conversations(3)]

    def summed_loss(batch: dict) -> float:
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch, use_cache=False).logits
        return float(torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE,
            reduction="sum"))

    collator = PaddingCollator(encoder.tokenizer.pad_token_id)
    separate = sum(summed_loss(collator([row])) for row in plain_rows(examples))
    (row,) = pack(examples, 1024)
    padded_row = {**row, "input_ids": row["input_ids"], "labels": row["labels"]}
    together = summed_loss(collator([padded_row, {"input_ids": [1] * 5, "labels": [IGNORE] * 5,
                                                  "position_ids": list(range(5))}]))
    assert together == pytest.approx(separate, rel=1e-4)


def test_dropout_is_forced_before_the_modules_are_built(tmp_path):
    """StarCoder2 copies its dropout fields into modules at construction; all must end at 0."""
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    config = Starcoder2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, residual_dropout=0.1,
                              embedding_dropout=0.1, attention_dropout=0.1)
    Starcoder2ForCausalLM(config).save_pretrained(tmp_path)
    model, changed = load_for_training(str(tmp_path), torch.float32, 0.0, vocab_size=64)
    assert changed == {"residual_dropout": 0.1, "embedding_dropout": 0.1, "attention_dropout": 0.1}
    values = dropout_values(model)
    assert any(k.endswith(".residual_dropout") for k in values)
    assert set(values.values()) == {0.0}
    assert model.config.use_cache is False


def test_force_dropout_reaches_gpt_style_names():
    from transformers import GPT2Config

    config = GPT2Config(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    assert {"resid_pdrop", "embd_pdrop", "attn_pdrop"} <= set(force_dropout(config, 0.0))
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)


def test_embeddings_grow_for_added_tokens(tiny_model_dir):  # noqa: F811 - the fixture
    model, _ = load_for_training(str(tiny_model_dir), torch.float32, 0.0, vocab_size=520)
    assert model.get_input_embeddings().weight.shape[0] == 520
    assert model.get_output_embeddings().weight.shape[0] == 520
