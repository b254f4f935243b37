"""pass@k with the unbiased estimator, and the scores of one model on one benchmark.

With ``n`` samples of a problem of which ``c`` pass, the chance that at least
one of ``k`` samples drawn without replacement passes is
``1 - C(n - c, k) / C(n, k)`` (Chen et al., 2021). It is computed as
``1 - prod_{i = n - c + 1}^{n} (1 - k / i)``, a product of numbers in
(0, 1], which never forms the huge binomials; when ``n - c < k`` every draw of
``k`` holds a passing sample and the value is exactly 1. A benchmark's pass@k
is the mean over its problems. Greedy decoding is the case ``n = 1``: pass@1
is then the share of problems solved.
"""

from __future__ import annotations

import math
from typing import Iterable

#: The k reported when there are enough samples.
DEFAULT_KS = (1, 5, 10)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k for one problem with ``n`` samples of which ``c`` pass."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def scores(counts: dict[str, tuple[int, int]], ks: Iterable[int] = DEFAULT_KS) -> dict:
    """pass@k (each k no larger than the fewest samples), problems solved and total, from ``{task: (n, c)}``.

    ``passed`` counts the problems with at least one passing sample.
    """
    total = len(counts)
    result: dict = {}
    fewest = min((n for n, _ in counts.values()), default=0)
    for k in sorted(set(ks)):
        if total and k <= fewest:
            result[f"pass@{k}"] = round(sum(pass_at_k(n, c, k) for n, c in counts.values()) / total, 4)
    if "pass@1" not in result:
        result["pass@1"] = 0.0
    result["passed"] = sum(1 for _, c in counts.values() if c)
    result["total"] = total
    return result
