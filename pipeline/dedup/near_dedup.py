"""Near-duplicate removal: MinHash signatures, LSH candidates, clusters, one
document kept per cluster.

Used by the seeds stage (Jaccard 0.5 over function source) and the dedup
stage (0.7 over instruction + response + code). The steps, each reproducible:

1. Signatures: :func:`pipeline.dedup.minhash.minhash_signatures` (word 5-gram
   shingles, 128 permutations by default, equal to datasketch's own MinHash
   of the same shingles; see that module for tokens and hashing).
2. Candidates: every pair of documents sharing a band in datasketch's
   ``MinHashLSH`` (bands and rows chosen by datasketch for the threshold).
   Documents with no token are never candidates: there is nothing to compare
   (exact dedup, a separate step, handles repeated empty texts).
3. Verification (on by default): a candidate pair is kept only when the
   Jaccard similarity estimated from the two signatures, as
   ``datasketch.MinHash.jaccard`` computes it, is ``>= threshold``. This drops
   the LSH false positives, which at 128 permutations and threshold 0.7 are
   pairs with true similarity down to about 0.5.
4. Clusters: connected components (union-find) over all verified pairs, so a
   chain ``a ~ b ~ c`` is one cluster even when ``a`` and ``c`` are below the
   threshold, the usual transitive rule of MinHash dedup.
5. Keep: in each cluster, the member whose ``sha256(f"{seed}:{id}")`` is
   smallest. The choice depends only on the members' ids and the seed, never
   on input order, chunking or the number of workers.

Why 128 permutations: the standard error of the Jaccard estimate is
``sqrt(J(1-J)/128)``, about 0.04 at J = 0.7, enough for a dedup decision;
cost grows linearly with the count, and 128 is datasketch's default, so
signatures can be compared with sketches built elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.dedup.minhash import EMPTY_HASH, minhash_signatures
from pipeline.framework.ids import seeded_rank

__all__ = [
    "NearDedupConfig",
    "NearDedupResult",
    "NearDedupSettings",
    "candidate_pairs",
    "dedup_signatures",
    "near_dedup",
    "near_duplicate_clusters",
    "representative",
]

_VERIFY_BLOCK = 65536  # candidate pairs compared per numpy block


class NearDedupConfig(BaseModel):
    """Settings of near-duplicate removal (embedded in a stage's YAML config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.7, gt=0.0, le=1.0, description="Jaccard similarity above which documents are near-duplicates")
    num_perm: int = Field(128, ge=2, description="MinHash permutations (signature length)")
    ngram: int = Field(5, ge=1, description="words per shingle")
    seed: int = Field(42, ge=0, lt=2**32, description="seeds the permutations and the choice of the kept member")
    workers: int = Field(0, ge=0, description="processes computing signatures; 0 = all available cores")
    verify: bool = Field(True, description="keep an LSH candidate pair only if its estimated Jaccard >= threshold")


@dataclass(frozen=True)
class NearDedupResult:
    """Outcome of near-dedup, aligned with the input order.

    ``keep[i]`` says whether document ``i`` survives; ``clusters`` lists the
    index clusters (size >= 2, members ascending, clusters ordered by their
    first member); ``cluster_of`` maps every clustered index to the index of
    its cluster's kept member (which maps to itself).
    """

    ids: list[str]
    keep: list[bool]
    clusters: list[list[int]]
    cluster_of: dict[int, int]

    @property
    def n_clusters(self) -> int:
        """Number of clusters of near-duplicates."""
        return len(self.clusters)

    @property
    def kept_ids(self) -> list[str]:
        """Ids of the surviving documents, in input order."""
        return [doc_id for doc_id, kept in zip(self.ids, self.keep) if kept]

    @property
    def n_dropped(self) -> int:
        """Number of documents removed as near-duplicates."""
        return len(self.keep) - sum(self.keep)

    def duplicate_of(self, index: int) -> str | None:
        """Id of the kept document that document ``index`` duplicates, or
        None when ``index`` is kept."""
        if self.keep[index]:
            return None
        return self.ids[self.cluster_of[index]]


def _check_signatures(signatures: np.ndarray) -> np.ndarray:
    signatures = np.asarray(signatures)
    if signatures.ndim != 2 or signatures.dtype != np.uint32:
        raise ValueError("signatures must be a 2-D uint32 array (documents x permutations)")
    return signatures


def candidate_pairs(signatures: np.ndarray, *, threshold: float, seed: int = 42) -> np.ndarray:
    """All pairs of rows sharing an LSH band in datasketch's ``MinHashLSH``
    tuned for ``threshold``: an ``(k, 2)`` int64 array of ``(i, j)``, ``i < j``,
    sorted. Rows without shingles (all ``EMPTY_HASH``) take no part.
    ``seed`` is the signatures' seed, recorded on the datasketch sketches."""
    from datasketch import LeanMinHash, MinHashLSH

    signatures = _check_signatures(signatures)
    lsh = MinHashLSH(threshold=threshold, num_perm=signatures.shape[1])
    found: list[tuple[int, int]] = []
    for i in np.flatnonzero((signatures != EMPTY_HASH).any(axis=1)).tolist():
        sketch = LeanMinHash(seed=seed, hashvalues=signatures[i], scheme="affine32")
        found.extend((j, i) for j in lsh.query(sketch))
        lsh.insert(i, sketch, check_duplication=False)
    pairs = np.array(sorted(found), dtype=np.int64).reshape(-1, 2)
    return pairs


def _verified(signatures: np.ndarray, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """The pairs whose estimated Jaccard (share of equal signature slots)
    is at least ``threshold``."""
    keep = np.zeros(len(pairs), dtype=bool)
    num_perm = float(signatures.shape[1])
    for start in range(0, len(pairs), _VERIFY_BLOCK):
        block = pairs[start:start + _VERIFY_BLOCK]
        equal = np.count_nonzero(signatures[block[:, 0]] == signatures[block[:, 1]], axis=1)
        keep[start:start + len(block)] = equal / num_perm >= threshold
    return pairs[keep]


def _components(n: int, pairs: np.ndarray) -> list[list[int]]:
    """Connected components of size >= 2 of the graph on ``range(n)`` with
    edges ``pairs``; members ascending, components by first member."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs.tolist():
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for x in np.unique(pairs).tolist():
        groups.setdefault(root(x), []).append(x)
    return sorted(groups.values())


def near_duplicate_clusters(
    signatures: np.ndarray, *, threshold: float, verify: bool = True, seed: int = 42
) -> list[list[int]]:
    """Clusters (size >= 2) of near-duplicate rows of ``signatures``: LSH
    candidate pairs, optionally verified by estimated Jaccard ``>= threshold``,
    joined transitively. Members ascending; clusters ordered by first member."""
    signatures = _check_signatures(signatures)
    pairs = candidate_pairs(signatures, threshold=threshold, seed=seed)
    if verify:
        pairs = _verified(signatures, pairs, threshold)
    return _components(len(signatures), pairs)


def representative(ids: Sequence[str], members: Sequence[int], seed: int) -> int:
    """The member of a cluster to keep: the index whose id has the smallest
    ``sha256(f"{seed}:{id}")`` (a seeded, order-independent choice)."""
    return min(members, key=lambda i: seeded_rank(seed, ids[i]))


def dedup_signatures(ids: Sequence[str], signatures: np.ndarray, config: NearDedupConfig | None = None) -> NearDedupResult:
    """Near-dedup of documents whose signatures are already computed (row
    ``i`` belongs to ``ids[i]``); see :func:`near_dedup`."""
    config = config or NearDedupConfig()
    ids = [str(doc_id) for doc_id in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    signatures = _check_signatures(signatures)
    if len(signatures) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(signatures)} signatures")
    clusters = near_duplicate_clusters(signatures, threshold=config.threshold, verify=config.verify, seed=config.seed)
    keep = [True] * len(ids)
    cluster_of: dict[int, int] = {}
    for members in clusters:
        kept = representative(ids, members, config.seed)
        for i in members:
            cluster_of[i] = kept
            keep[i] = i == kept
    return NearDedupResult(ids=ids, keep=keep, clusters=clusters, cluster_of=cluster_of)


def near_dedup(ids: Sequence[str], texts: Sequence[str], config: NearDedupConfig | None = None) -> NearDedupResult:
    """Remove near-duplicates among ``texts`` (``ids[i]`` names ``texts[i]``,
    ids unique): one document kept per cluster of documents whose word
    n-gram shingle sets have Jaccard similarity about ``config.threshold``
    or more. The result does not depend on input order or worker count."""
    config = config or NearDedupConfig()
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    signatures = minhash_signatures(
        texts, num_perm=config.num_perm, ngram=config.ngram, seed=config.seed, workers=config.workers
    )
    return dedup_signatures(ids, signatures, config)


class NearDedupSettings(BaseModel):
    """Near-dedup settings as a stage's config section; the run seed and worker count come from the run."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(default=0.7, gt=0, le=1, description="Jaccard similarity that makes two near-duplicates.")
    ngram: int = Field(default=5, ge=1, description="Words per shingle.")
    num_perm: int = Field(default=128, ge=16, description="MinHash permutations.")

    def resolve(self, seed: int, workers: int) -> NearDedupConfig:
        """The module's config for this run."""
        return NearDedupConfig(
            threshold=self.threshold, ngram=self.ngram, num_perm=self.num_perm, seed=seed % 2**32, workers=workers
        )
