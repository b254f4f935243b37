"""MinHash signatures of word n-gram shingles, computed in bulk with numpy.

Definitions (the near-dedup module and its tests rely on them):

* **Tokens** are the maximal runs of word characters, exactly
  ``re.findall(r"\\w+", text)``: letters, digits and ``_`` in any script.
  Case is kept (``Foo`` and ``foo`` are different identifiers in code).
* **Shingles** are the ``ngram`` consecutive tokens joined by one space, taken
  as a set. A text with fewer than ``ngram`` tokens (but at least one) has a
  single shingle made of all its tokens; a text with no token has none.
* **Shingle hash** (32 bits): each token is hashed with BLAKE2b (8 bytes,
  little-endian), the token hashes of a shingle are folded left to right as
  ``acc = acc * M + h (mod 2**64)``, and the low 32 bits of the MurmurHash3
  64-bit finalizer of ``acc`` are the shingle's hash. :func:`shingle_hash` is
  the one-at-a-time reference; the bulk path computes the same values.
* **Signature**: datasketch's default ``"affine32"`` scheme, bit for bit. The
  shingle hash is pre-mixed with the 32-bit MurmurHash3 finalizer, each
  permutation ``k`` maps it to ``a_k * h + b_k (mod 2**32)`` with datasketch's
  own ``(a, b)`` for the seed, and the signature is the minimum per
  permutation. So ``datasketch.MinHash(num_perm, seed=seed,
  hashfunc=shingle_hash)`` fed the same shingles has equal ``hashvalues``;
  a text without shingles gets datasketch's empty value ``2**32 - 1``
  everywhere.

Why not datasketch's SHA-1 of each shingle: one Python-level hash call per
shingle is the bottleneck of the per-document loop. Hashing each distinct
token once (cached per chunk) and combining token hashes with numpy keeps
Python work per token to one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np

__all__ = [
    "EMPTY_HASH",
    "default_workers",
    "minhash_signatures",
    "permutations",
    "shingle_hash",
    "shingles",
    "tokenize",
]

EMPTY_HASH = np.uint32(0xFFFFFFFF)
"""Signature value of a permutation that saw no shingle (datasketch's too)."""

_MASK64 = (1 << 64) - 1
_FOLD = 0x9E3779B97F4A7C15  # odd 64-bit multiplier folding token hashes
_FOLD_NP = np.uint64(_FOLD)
_F64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_F32 = (np.uint32(16), np.uint32(13), np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35))
_LOW32 = np.uint64(0xFFFFFFFF)
# Shingles permuted per numpy block: a (num_perm x block) uint32 matrix of
# 2 MB at 128 permutations, reused from block to block.
_BLOCK_SHINGLES = 4096


# -- tokens and shingles ----------------------------------------------------

def _word_or_space(code: int) -> int:
    char = chr(code)
    return code if char.isalnum() or char == "_" else 32


class _UnicodeTable(dict):
    """``str.translate`` table mapping every non-word character to a space;
    filled lazily, one entry per distinct character ever seen."""

    def __missing__(self, code: int) -> int:
        value = _word_or_space(code)
        self[code] = value
        return value


_ASCII_TABLE = {code: _word_or_space(code) for code in range(128)}
_UNICODE_TABLE = _UnicodeTable(_ASCII_TABLE)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into word tokens, equal to ``re.findall(r"\\w+", text)``.

    Implemented with ``str.translate`` + ``str.split`` (three times faster
    than the regular expression on source code).
    """
    table = _ASCII_TABLE if text.isascii() else _UNICODE_TABLE
    return text.translate(table).split()


def shingles(tokens: Sequence[str], ngram: int) -> list[str]:
    """Word n-gram shingles of ``tokens`` (joined by one space), in order and
    with repeats; a non-empty input shorter than ``ngram`` gives one shingle
    of all its tokens, an empty one gives none."""
    if not tokens:
        return []
    if len(tokens) < ngram:
        return [" ".join(tokens)]
    return [" ".join(tokens[i:i + ngram]) for i in range(len(tokens) - ngram + 1)]


# -- hashing ----------------------------------------------------------------

def _token_hash(token: str) -> int:
    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _fmix64_int(value: int) -> int:
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _MASK64
    return value ^ (value >> 33)


def shingle_hash(shingle: str | bytes) -> int:
    """The 32-bit hash of one shingle (space-joined tokens; bytes are read as
    UTF-8). Reference implementation of what :func:`minhash_signatures`
    computes in bulk; usable as datasketch's ``hashfunc``."""
    if isinstance(shingle, (bytes, bytearray)):
        shingle = shingle.decode("utf-8", "surrogatepass")
    acc = 0
    for token in shingle.split(" "):
        acc = (acc * _FOLD + _token_hash(token)) & _MASK64
    return _fmix64_int(acc) & 0xFFFFFFFF


def _fmix64(values: np.ndarray) -> np.ndarray:
    shift, mul1, mul2 = _F64
    values = values ^ (values >> shift)
    values *= mul1
    values ^= values >> shift
    values *= mul2
    values ^= values >> shift
    return values


def _fmix32(values: np.ndarray) -> np.ndarray:
    shift16, shift13, mul1, mul2 = _F32
    values = values ^ (values >> shift16)
    values *= mul1
    values ^= values >> shift13
    values *= mul2
    values ^= values >> shift16
    return values


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` uint32 permutation parameters datasketch's ``"affine32"``
    MinHash draws for ``(num_perm, seed)``, taken from datasketch itself."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    a = np.ascontiguousarray(a, dtype=np.uint32)
    b = np.ascontiguousarray(b, dtype=np.uint32)
    a.flags.writeable = b.flags.writeable = False
    return a, b


# -- signatures of one chunk ------------------------------------------------

def _fold_windows(token_hashes: np.ndarray, starts: np.ndarray, widths: np.ndarray, ngram: int) -> np.ndarray:
    """Fold the token hashes of each window ``[start, start + width)``."""
    if len(starts) and (widths == ngram).all():
        # Common case: fold every full-width window of the flat token array
        # with contiguous slices, then pick the windows inside a text.
        n_full = len(token_hashes) - ngram + 1
        acc = token_hashes[:n_full].copy()
        for k in range(1, ngram):
            acc *= _FOLD_NP
            acc += token_hashes[k:n_full + k]
        return acc[starts]
    acc = token_hashes[starts]
    for k in range(1, ngram):
        longer = widths > k
        if not longer.any():
            break
        acc[longer] = acc[longer] * _FOLD_NP + token_hashes[starts[longer] + k]
    return acc


def _shingle_hashes(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every shingle of every text (in text order, repeats kept),
    pre-mixed for the permutations, and the number of shingles per text."""
    token_lists = [tokenize(text) for text in texts]
    cache: dict[str, int] = {}
    lookup = cache.get

    def miss(token: str) -> int:
        value = cache[token] = _token_hash(token)
        return value

    flat = [lookup(t) or miss(t) for tokens in token_lists for t in tokens]
    token_hashes = np.array(flat, dtype=np.uint64)
    n_tokens = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    width = np.minimum(n_tokens, ngram)
    counts = np.where(n_tokens > 0, n_tokens - width + 1, 0)
    # Window j (counted over all texts) of text d starts at token
    # token_start[d] + j - first_window[d].
    token_start = np.cumsum(n_tokens) - n_tokens
    first_window = np.cumsum(counts) - counts
    starts = np.repeat(token_start - first_window, counts) + np.arange(int(counts.sum()), dtype=np.int64)
    acc = _fold_windows(token_hashes, starts, np.repeat(width, counts), ngram)
    hashes = (_fmix64(acc) & _LOW32).astype(np.uint32)
    return _fmix32(hashes), counts


def _chunk_signatures(texts: Sequence[str], ngram: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signatures of ``texts`` (one process, no pool)."""
    hashes, counts = _shingle_hashes(texts, ngram)
    out = np.full((len(texts), len(a)), EMPTY_HASH, dtype=np.uint32)
    rows = np.flatnonzero(counts)
    ends = np.cumsum(counts[rows])
    a_col, b_col = a[:, None], b[:, None]
    buffer = np.empty((len(a), _BLOCK_SHINGLES), dtype=np.uint32)  # reused: no page faults per block
    first = 0
    while first < len(rows):
        # Texts first..stop-1: about _BLOCK_SHINGLES shingles, at least one text.
        begin = int(ends[first - 1]) if first else 0
        stop = max(int(np.searchsorted(ends, begin + _BLOCK_SHINGLES, side="right")), first + 1)
        width = int(ends[stop - 1]) - begin
        block = buffer[:, :width] if width <= _BLOCK_SHINGLES else np.empty((len(a), width), dtype=np.uint32)
        np.multiply(a_col, hashes[None, begin:begin + width], out=block)
        block += b_col
        offsets = np.concatenate(([0], ends[first:stop - 1] - begin))
        out[rows[first:stop]] = np.minimum.reduceat(block, offsets, axis=1).T
        first = stop
    return out


def _chunk_job(args: tuple) -> np.ndarray:
    return _chunk_signatures(*args)


# -- public entry point -----------------------------------------------------

def default_workers() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def minhash_signatures(
    texts: Sequence[str],
    *,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 42,
    workers: int = 0,
    chunk_size: int = 512,
) -> np.ndarray:
    """MinHash signatures of ``texts``: a ``(len(texts), num_perm)`` uint32 array.

    Row ``i`` equals the ``hashvalues`` of ``datasketch.MinHash(num_perm,
    seed=seed, hashfunc=shingle_hash)`` updated with
    ``shingles(tokenize(texts[i]), ngram)`` (see the module docstring).

    ``workers`` processes (0: all available cores) each take chunks of
    ``chunk_size`` texts; with one worker or a single chunk everything runs
    in this process. Results do not depend on ``workers`` or ``chunk_size``.
    """
    if num_perm < 1 or ngram < 1 or chunk_size < 1:
        raise ValueError("num_perm, ngram and chunk_size must be positive")
    a, b = permutations(num_perm, seed)
    texts = list(texts)
    workers = workers or default_workers()
    n_chunks = math.ceil(len(texts) / chunk_size)
    if n_chunks <= 1:
        return _chunk_signatures(texts, ngram, a, b)
    jobs = [(texts[i:i + chunk_size], ngram, a, b) for i in range(0, len(texts), chunk_size)]
    if workers == 1:
        parts = [_chunk_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, n_chunks)) as pool:
            parts = list(pool.map(_chunk_job, jobs))
    return np.concatenate(parts, axis=0)
