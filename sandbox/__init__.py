"""The Docker sandbox: runs model-written Python programs with their tests, safely and fast.

    from sandbox import SandboxConfig, SandboxPool, Job
    with SandboxPool(SandboxConfig(workers=2)) as pool:
        verdicts = pool.run([Job(id="a", code="assert 1 + 1 == 2")])
"""

from .config import SandboxConfig
from .errors import SandboxError, SandboxUnavailable
from .image import build_image, ensure_image, image_tag
from .job import Job
from .pool import SandboxPool
from .verdict import STATUSES, Verdict

__all__ = [
    "SandboxConfig", "SandboxPool", "Job", "Verdict", "STATUSES", "SandboxError", "SandboxUnavailable",
    "ensure_image", "build_image", "image_tag",
]

