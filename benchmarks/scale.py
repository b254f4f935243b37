"""Execute-stage throughput with the local executor and with Ray, on the same cores, in one run.

Both run the real execute stage (sandbox pool, verdict cache in a fresh work
dir each, so nothing is served from a cache) over the same generated
responses; Ray starts a local cluster with the same number of CPUs and
places one sandbox actor per node (here: one node). Prints rows per second
for each and the ratio, so the overhead of Ray is known.

    python benchmarks/scale.py [--rows 400] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.cli import _model_config_class  # noqa: E402
from pipeline.framework.config import build_config_model  # noqa: E402
from pipeline.framework.runner import Runner  # noqa: E402
from pipeline.framework.stage import PlannedStage  # noqa: E402
from stages import PIPELINE  # noqa: E402


def responses(n: int) -> list[dict]:
    """n small, distinct, passing responses with their tests."""
    return [
        {"id": f"r{i}", "seed_id": "s", "instruction_id": f"i{i}", "instruction": f"Add {i}.",
         "response": f"```python\ndef add(x):\n    return x + {i}\n```", "tests": f"assert add(1) == {i + 1}"}
        for i in range(n)
    ]


def run(executor: str, data: Path, workers: int, batch: int) -> tuple[float, dict]:
    """Seconds for one execute-stage run with ``executor``, and its manifest."""
    model = build_config_model({e.name: None if isinstance(e, PlannedStage) else e.Config for e in PIPELINE},
                               _model_config_class())
    with tempfile.TemporaryDirectory() as work:
        config = model.model_validate({
            "run": {"work_dir": work, "executor": executor, "workers": workers, "batch_size": batch},
            "stages": {"execute": {"sandbox": {"workers": workers}}},
        })
        runner = Runner(config, PIPELINE)
        if executor == "ray":
            from pipeline.framework.executors.ray_executor import connect

            connect(None, workers)  # cluster start-up is not counted
        start = time.perf_counter()
        manifest = runner.run_stage("execute", input_override=str(data))
        return time.perf_counter() - start, manifest


def main() -> None:
    """Run both executors and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2, help="cores for both executors")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "responses.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in responses(args.rows)))
        results = {name: run(name, data, args.workers, args.batch_size) for name in ("local", "ray")}
    print(f"\nexecute stage, {args.rows} responses, {args.workers} cores, batches of {args.batch_size}")
    print(f"{'executor':<10} {'seconds':>8} {'rows/s':>8} {'passed':>7}")
    for name, (seconds, manifest) in results.items():
        print(f"{name:<10} {seconds:8.2f} {args.rows / seconds:8.1f} {manifest['stats'].get('status_passed', 0):7d}")
    local, ray = results["local"][0], results["ray"][0]
    print(f"ray / local throughput: {local / ray:.2f} (1.0 = no overhead)")


if __name__ == "__main__":
    main()
