"""Named filters: one declaration drives a stage's chain (choices, defaults, order rule), its runs and its docs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.analysis.seed_filters import SEED_FILTERS
from pipeline.dedup.filters import DEDUP_FILTERS
from pipeline.framework.filters import FilterContext, FilterRegistry
from stages.seeds import SeedsConfig
from tests.conftest import REPO


def small_registry() -> FilterRegistry:
    """Three filters over numbers: a plain one, one with its own reasons, a whole-output one off by default."""
    registry = FilterRegistry("numbers")

    @registry.register()
    def positive(items, ctx):
        """Keeps numbers above zero."""
        return [n > 0 for n in items]

    @registry.register("parity")
    def even(items, ctx):
        """Drops odd numbers as ``odd_<n % 4>``."""
        return [True if n % 2 == 0 else f"odd_{n % 4}" for n in items]

    @registry.register(default=False, whole_output=True)
    def below_limit(items, ctx):
        """Keeps numbers up to ``ctx.config``."""
        return [n <= ctx.config for n in items]

    return registry


def test_a_chain_runs_in_order_and_gives_each_drop_its_reason():
    registry = small_registry()
    seen = []
    kept, dropped = registry.apply(["positive", "parity", "below_limit"], [-2, 1, 2, 3, 4, 8], FilterContext(4),
                                   progress=seen.append)
    assert kept == [2, 4]
    assert dropped == [(-2, "positive"), (1, "odd_1"), (3, "odd_3"), (8, "below_limit")]
    assert seen == ["positive", "parity", "below_limit"]
    # one scope at a time: the per-row filters while batches run, the whole-output ones once they are done
    assert registry.apply(["positive", "below_limit"], [-1, 9], FilterContext(4), whole_output=False)[0] == [9]
    assert registry.apply(["positive", "below_limit"], [-1, 9], FilterContext(4), whole_output=True)[0] == [-1]


def test_the_registry_gives_the_choices_the_defaults_and_the_order_rule():
    registry = small_registry()
    assert registry.names == ("positive", "parity", "below_limit")
    assert registry.defaults() == ["positive", "parity"] and registry.whole_output() == ("below_limit",)
    assert registry.check_chain(["parity", "below_limit"]) == ["parity", "below_limit"]
    with pytest.raises(ValueError, match="positive comes after a whole-output filter"):
        registry.check_chain(["below_limit", "positive"])
    with pytest.raises(ValueError, match="listed twice"):
        registry.check_chain(["parity", "parity"])
    with pytest.raises(ValueError, match="declared twice"):
        registry.register("parity")(lambda items, ctx: [])
    assert "Off by default: below_limit" in registry.describe_chain()
    assert registry.markdown()[1] == "- `parity` (on by default; row by row): Drops odd numbers as ``odd_<n % 4>``."


def test_the_filter_context_keeps_what_it_builds_per_process_but_does_not_pickle_it():
    import pickle

    ctx = FilterContext({"k": 1}, seed=3)
    assert ctx.cached("index", lambda: [1, 2]) is ctx.cached("index", lambda: [3])
    assert pickle.loads(pickle.dumps(ctx))._cache == {}


def test_the_seeds_config_derives_from_the_seeds_registry():
    field = SeedsConfig.model_fields["filters"]
    assert SeedsConfig().filters == SEED_FILTERS.defaults()
    assert "docstring_judge" not in SeedsConfig().filters and "docstring_judge" in SEED_FILTERS
    assert field.description == SEED_FILTERS.describe_chain()
    assert set(SEED_FILTERS.whole_output()) == {"near_dedup", "docstring_judge"}
    with pytest.raises(ValueError, match="Input should be"):
        SeedsConfig(filters=["no_such_filter"])


def test_the_dedup_stage_runs_its_registry_in_declared_order():
    assert DEDUP_FILTERS.names == ("not_passed", "format", "sanitize", "contaminated", "extra_response",
                                   "exact_duplicate", "near_duplicate", "duplicate_names")


NEW_FILTER = textwrap.dedent('''
    import json
    from pipeline.analysis.seed_filters import SEED_FILTERS

    # the one place: declare the filter
    @SEED_FILTERS.register(whole_output=False)
    def short_name(candidates, ctx):
        """Keeps functions whose name is at most 6 characters."""
        return [len(fn.name) <= 6 for _, fn in candidates]

    from pipeline.reference_docs import generated_docs
    from stages.seeds import SeedsConfig, SeedsStage
    from tests.test_published_settings import paper_recipe

    docs = generated_docs()
    row = next(line for line in docs["configuration.md"].splitlines() if line.startswith("| `stages.seeds.filters`"))
    config = SeedsConfig(filters=["returns_value", "short_name"])
    source = "def tiny(x):\\n    \\"\\"\\"Doc.\\"\\"\\"\\n    return x\\n\\n\\ndef rather_long(x):\\n    \\"\\"\\"Doc.\\"\\"\\"\\n    return x\\n"
    result = SeedsStage(config, paper_recipe()).process_batch([{"id": "f", "path": "f.py", "content": source}])
    print(json.dumps({
        "default": "short_name" in SeedsConfig().filters,
        "choice": "short_name" in str(SeedsConfig.model_fields["filters"].annotation),
        "config_doc": "short_name" in row,
        "stages_doc": "- `short_name` (on by default; row by row): Keeps functions whose name is at most 6 characters."
                      in docs["stages.md"],
        "kept": [r["name"] for r in result.rows],
        "dropped": [(r["name"], r["drop_reason"]) for r in result.dropped],
    }))
''')


def test_a_new_seeds_filter_is_declared_in_one_place_and_everything_follows():
    """docs/architecture.md's recipe: one decorated function makes a filter a choice, a default, a doc and a step."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", NEW_FILTER], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"default": True, "choice": True, "config_doc": True, "stages_doc": True,
                     "kept": ["tiny"], "dropped": [["rather_long", "short_name"]]}
