"""Write a safetensors model as a GGUF file, so llama.cpp can serve a model the pipeline fine-tuned.

llama.cpp reads GGUF files only; the finetune stage saves safetensors. A
fine-tune of a GGUF model keeps its architecture and tokenizer, so the
exporter takes the original GGUF as a *template*: every metadata field is
copied from it (hyper-parameters, tokenizer, special tokens), except the
chat template, which comes from the model directory when it has one (a
fine-tune may train its own format), and the file type. Every tensor the
template holds is written again from the model's state dict, found through
gguf-py's own table of tensor names (the table transformers uses to load a
GGUF, read the other way), in the order the template lists them:

* one-dimensional tensors (norms, biases) in float32;
* matrices in the chosen type: ``q8_0`` (8-bit blocks of 32, close to lossless,
  half the size of float16), ``f16`` or ``f32``. A matrix whose rows do not
  split into blocks of 32 stays in float16.

Architectures: ``qwen2`` (tensors as transformers holds them) and ``llama``
(llama.cpp stores the query and key projections with their rotary halves
interleaved; transformers undoes that on load, the export redoes it). Others
are refused with a one-line error rather than written wrong. A model whose
vocabulary or layer count differs from the template's is refused too.

Exports are cached under the model cache, keyed by the model's weight files,
the template and the type, and written under a temporary name first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.llm.base import BackendError

log = logging.getLogger(__name__)

GGUFType = Literal["q8_0", "f16", "f32"]
SUPPORTED_ARCHS = ("qwen2", "llama")
SOURCE_RECORD = "gguf_source.json"
"""A file in a model directory naming the GGUF it came from (written by the conversion and kept by fine-tunes)."""
_SKIPPED_FIELDS = ("GGUF.", "general.architecture", "general.file_type", "tokenizer.chat_template")


def record_gguf_source(model_dir: str | Path, gguf_path: str | Path) -> None:
    """Note in ``model_dir`` which GGUF file its weights (and tokenizer) came from."""
    (Path(model_dir) / SOURCE_RECORD).write_text(json.dumps({"gguf": str(Path(gguf_path).resolve())}) + "\n")


def gguf_source(model_dir: str | Path) -> str | None:
    """The GGUF file a model directory records as its origin, if it records one that still exists."""
    record = Path(model_dir) / SOURCE_RECORD
    try:
        path = json.loads(record.read_text())["gguf"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if Path(path).is_file() else None


def copy_gguf_source(src_dir: str | Path, dst_dir: str | Path) -> None:
    """Carry ``src_dir``'s origin record over to ``dst_dir`` (a model trained from it), if there is one."""
    source = gguf_source(src_dir)
    if source is not None:
        record_gguf_source(dst_dir, source)


def export_cache_path(model_dir: str | Path, template: str | Path, weights: GGUFType, cache_dir: str | Path) -> Path:
    """Where the export of ``model_dir`` goes: a key over its weight files, the template and the type."""
    folder = Path(model_dir).resolve()
    parts = [str(folder), str(Path(template).resolve()), weights]
    for f in sorted(folder.glob("*.safetensors")) + [folder / "config.json", folder / "tokenizer_config.json"]:
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return Path(cache_dir) / "gguf-exports" / f"{folder.name}-{weights}-{key}.gguf"


def ensure_exported(model_dir: str | Path, template: str | Path, weights: GGUFType, cache_dir: str | Path) -> Path:
    """The GGUF export of ``model_dir`` (written once, then read from the cache)."""
    target = export_cache_path(model_dir, template, weights, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to GGUF (%s, template %s) at %s", model_dir, weights, template, target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        export_gguf(model_dir, template, tmp, weights)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def export_gguf(model_dir: str | Path, template: str | Path, out_path: str | Path, weights: GGUFType = "q8_0") -> Path:
    """Write ``model_dir``'s weights as a GGUF file shaped like ``template``; returns ``out_path``."""
    import gguf

    reader = gguf.GGUFReader(str(template))
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise BackendError(f"cannot export to GGUF: template {template} is a {arch!r} model; "
                           f"supported: {', '.join(SUPPORTED_ARCHS)}")
    config = json.loads((Path(model_dir) / "config.json").read_text())
    _check_shape(config, reader, arch, template)
    state = _load_state(Path(model_dir))
    by_gguf_name = _gguf_names(state, arch, config["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(out_path), arch)
    _copy_metadata(reader, writer, Path(model_dir))
    writer.add_file_type({"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "f32": gguf.LlamaFileType.ALL_F32}[weights])
    for tensor in reader.tensors:
        if tensor.name not in by_gguf_name:
            raise BackendError(f"cannot export {model_dir} to GGUF: no weight for the template's tensor {tensor.name}")
        data = state[by_gguf_name[tensor.name]]
        if arch == "llama" and tensor.name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config["num_attention_heads"] if "attn_q" in tensor.name else config.get(
                "num_key_value_heads", config["num_attention_heads"])
            data = interleave_rotary_halves(data, heads)
        expected = tuple(int(x) for x in reversed(tensor.shape.tolist()))
        if tuple(data.shape) != expected:
            raise BackendError(f"cannot export {model_dir} to GGUF: {tensor.name} is {tuple(data.shape)} in the model, "
                               f"{expected} in the template")
        _add_tensor(writer, tensor.name, data, weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out_path)


def interleave_rotary_halves(weight: np.ndarray, heads: int) -> np.ndarray:
    """A llama query/key projection in llama.cpp's order: per head, the two rotary halves interleaved row by row."""
    dim = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, dim, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _field(reader, name: str) -> Any:
    field = reader.fields.get(name)
    return field.contents() if field is not None else None


def _check_shape(config: dict, reader, arch: str, template) -> None:
    """Refuse a model whose layer count or vocabulary differs from the template's."""
    layers = _field(reader, f"{arch}.block_count")
    if layers != config["num_hidden_layers"]:
        raise BackendError(f"cannot export to GGUF: the model has {config['num_hidden_layers']} layers, "
                           f"template {template} has {layers}")
    tokens = len(_field(reader, "tokenizer.ggml.tokens") or [])
    if tokens != config["vocab_size"]:
        raise BackendError(f"cannot export to GGUF: the model's vocabulary has {config['vocab_size']} tokens, "
                           f"template {template} has {tokens} (a fine-tune that added tokens needs its own GGUF)")


def _load_state(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the model's safetensors files, as float32 numpy arrays."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise BackendError(f"cannot export {model_dir} to GGUF: no .safetensors files there")
    state = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                state[name] = st.get_tensor(name).float().numpy()
    return state


def _gguf_names(state: dict, arch: str, layers: int) -> dict[str, str]:
    """GGUF tensor name -> the state dict's name, through gguf-py's name table."""
    import gguf

    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    table = gguf.get_tensor_name_map(arch_id, layers)
    names = {}
    for hf_name in state:
        stem, dot, suffix = hf_name.rpartition(".")
        mapped = table.get_name(stem) if dot and suffix in ("weight", "bias") else None
        if mapped is not None:
            names.setdefault(f"{mapped}.{suffix}", hf_name)
    if "token_embd.weight" in names:  # a tied output head is saved once, as the input embedding
        names.setdefault("output.weight", names["token_embd.weight"])
    return names


def _copy_metadata(reader, writer, model_dir: Path) -> None:
    """Every metadata field of the template, the chat template taken from the model directory when it has one."""
    import gguf

    for name, field in reader.fields.items():
        if name.startswith(_SKIPPED_FIELDS):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), main, sub_type=sub)
    template = _chat_template(model_dir) or _field(reader, "tokenizer.chat_template")
    if template:
        writer.add_chat_template(template)


def _chat_template(model_dir: Path) -> str | None:
    """The chat template saved with a model directory (chat_template.jinja or tokenizer_config.json)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = model_dir / "tokenizer_config.json"
    try:
        value = json.loads(config.read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def _add_tensor(writer, name: str, data: np.ndarray, weights: GGUFType) -> None:
    """One tensor in the chosen type: vectors in float32, matrices quantized or in float16/32."""
    import gguf

    if data.ndim == 1 or weights == "f32":
        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    elif weights == "q8_0" and data.shape[-1] % 32 == 0:
        q = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float16))
