"""The runner and the store on a real stage: done / stale / interrupted / missing, force, limits, resume."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import yaml

from pipeline.cli import _model_config_class
from pipeline.framework.config import build_config_model, load_config
from pipeline.framework.errors import InputError, PipelineError, StageNotBuiltError, StoreError
from pipeline.framework.runner import DONE, INTERRUPTED, MISSING, NOT_BUILT, STALE, Runner
from pipeline.framework.stage import BatchResult, MapStage, PlannedStage
from pipeline.framework.store import StageStore
from stages.seeds import SeedsStage
from tests.conftest import write_recipe


class NameLengths(MapStage):
    """A small downstream stage used to test how staleness travels down the pipeline."""

    name = "lengths"
    title = "Length of each seed's name"
    upstream = "seeds"
    input_columns = {"name": "function name"}
    output_columns = {"id": (pa.string(), "row id"), "name": (pa.string(), "name"), "length": (pa.int64(), "len")}

    def process_batch(self, rows):
        result = BatchResult()
        for row in rows:
            if row["name"].startswith("_"):
                result.drop({"id": row["id"], "name": row["name"]}, "private")
            else:
                result.keep({"id": row["id"], "name": row["name"], "length": len(row["name"])})
        return result


REGISTRY = [SeedsStage, NameLengths, PlannedStage("later", "Not built", "lengths", 99)]
MODEL = build_config_model({"seeds": SeedsStage.Config, "lengths": NameLengths.Config, "later": None},
                           _model_config_class())


def make_runner(tmp_path, corpus, overrides=(), **seeds):
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "work", **seeds)
    data = yaml.safe_load(recipe.read_text())
    data["stages"]["seeds"]["source"]["paths"] = [str(corpus)]
    data["run"]["workers"] = 1
    recipe.write_text(yaml.safe_dump(data))
    return Runner(load_config(recipe, MODEL, overrides), REGISTRY)


def states(runner):
    return {s.name: s.state for s in runner.states()}


def rows(runner, stage):
    return sorted(runner.store(stage).read_table().to_pylist(), key=lambda r: r["id"])


def test_states_run_skip_and_force(tmp_path, stdlib_corpus):
    runner = make_runner(tmp_path, stdlib_corpus)
    assert states(runner) == {"seeds": MISSING, "lengths": MISSING, "later": NOT_BUILT}
    runner.run(["seeds", "lengths"])
    assert states(runner) == {"seeds": DONE, "lengths": DONE, "later": NOT_BUILT}
    manifest_path = runner.store("seeds").manifest_path
    before = manifest_path.stat().st_mtime_ns
    runner.run(["seeds", "lengths"])
    assert manifest_path.stat().st_mtime_ns == before, "a done stage must be skipped"
    runner.run(["seeds"], force=True)
    assert manifest_path.stat().st_mtime_ns != before
    with pytest.raises(StageNotBuiltError, match="issue #99"):
        runner.run(["later"])


def test_manifest_counts_add_up(tmp_path, stdlib_corpus):
    runner = make_runner(tmp_path, stdlib_corpus)
    [manifest] = runner.run(["seeds"])
    stats, dropped = manifest["stats"], manifest["dropped"]
    function_drops = sum(v for k, v in dropped.items() if k != "unparseable_file")
    assert stats["functions_found"] == manifest["rows_out"] + function_drops
    assert manifest["rows_in"] == stats["files_parsed"] + dropped.get("unparseable_file", 0)
    assert manifest["rows_out"] == len(rows(runner, "seeds")) > 20
    table = runner.store("seeds").read_dropped()
    assert dict(zip(*map(list, pa.TableGroupBy(table, "drop_reason").aggregate([("drop_reason", "count")])
                             .select(["drop_reason", "drop_reason_count"]).to_pydict().values()))) == dropped


def test_config_change_makes_stage_and_downstream_stale(tmp_path, stdlib_corpus):
    runner = make_runner(tmp_path, stdlib_corpus)
    runner.run(["seeds", "lengths"])
    changed = make_runner(tmp_path, stdlib_corpus, ["stages.seeds.max_lines=20"])
    st = {s.name: s for s in changed.states()}
    assert st["seeds"].state == STALE and "config" in st["seeds"].why
    assert st["lengths"].state == STALE and "upstream seeds is stale" in st["lengths"].why
    with pytest.raises(PipelineError, match="reads the output of seeds, which is stale"):
        changed.run_stage("lengths")
    changed.run(["seeds"])
    st = {s.name: s for s in changed.states()}
    assert st["seeds"].state == DONE
    assert st["lengths"].state == STALE and "output changed" in st["lengths"].why
    changed.run(["seeds", "lengths"])
    assert states(changed)["lengths"] == DONE
    assert {r["id"] for r in rows(changed, "lengths")} <= {r["id"] for r in rows(changed, "seeds")}


def test_not_fingerprinted_settings_do_not_make_stale(tmp_path, stdlib_corpus):
    make_runner(tmp_path, stdlib_corpus).run(["seeds"])
    other = make_runner(tmp_path, stdlib_corpus, ["run.workers=2", "stages.seeds.batch_size=3"])
    assert states(other)["seeds"] == DONE


def test_interrupted_stage_resumes_to_the_same_rows(tmp_path, stdlib_corpus):
    reference = make_runner(tmp_path / "a", stdlib_corpus)
    reference.run(["seeds"])
    runner = make_runner(tmp_path / "b", stdlib_corpus)
    runner.run(["seeds"])
    store = runner.store("seeds")
    parts = store.part_paths()
    for path in parts[len(parts) // 2:]:
        path.unlink()
    store.manifest_path.unlink()
    assert states(runner)["seeds"] == INTERRUPTED
    runner.run(["seeds"])
    assert rows(runner, "seeds") == rows(reference, "seeds")
    ref_manifest, manifest = reference.store("seeds").read_manifest(), store.read_manifest()
    for key in ("rows_in", "rows_out", "dropped", "stats", "output_digest"):
        assert manifest[key] == ref_manifest[key], key


def test_limit_keeps_the_first_rows_deterministically(tmp_path, stdlib_corpus):
    full = make_runner(tmp_path / "full", stdlib_corpus)
    full.run(["seeds"])
    limited = make_runner(tmp_path / "lim", stdlib_corpus, ["stages.seeds.max_seeds=10"])
    [manifest] = limited.run(["seeds"])
    assert manifest["rows_out"] == 10
    again = make_runner(tmp_path / "lim2", stdlib_corpus, ["stages.seeds.max_seeds=10"])
    again.run(["seeds"])
    assert rows(limited, "seeds") == rows(again, "seeds")
    assert {r["id"] for r in rows(limited, "seeds")} < {r["id"] for r in rows(full, "seeds")}


def test_input_override_feeds_a_stage_and_checks_columns(tmp_path, stdlib_corpus):
    runner = make_runner(tmp_path, stdlib_corpus)
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"name": n}) + "\n" for n in ["alpha", "_hidden", "beta"]))
    [manifest] = runner.run(["lengths"], input_override=str(data))
    assert manifest["rows_in"] == 3 and manifest["rows_out"] == 2 and manifest["dropped"] == {"private": 1}
    assert states(runner)["lengths"] == DONE, "a stage fed by --input is done while that input is unchanged"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "x"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl: line 1: the row lacks required column\(s\) name for stage lengths"):
        runner.run_stage("lengths", input_override=str(bad))
    with pytest.raises(InputError, match="no such file or folder"):
        runner.run_stage("lengths", input_override=str(tmp_path / "absent.parquet"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"name": "ok"}\n{"name": \n')
    with pytest.raises(InputError, match=r"broken.jsonl: line 2, column 10: not valid JSON: Expecting value"):
        runner.run_stage("lengths", input_override=str(broken), force=True)


def test_corrupted_part_is_named_and_nothing_is_lost(tmp_path, stdlib_corpus):
    runner = make_runner(tmp_path, stdlib_corpus)
    runner.run(["seeds"])
    store = runner.store("seeds")
    store.manifest_path.unlink()
    victim = store.part_paths()[0]
    victim.write_bytes(b"PAR1 this is not parquet")
    snapshot = {p: p.read_bytes() for p in store.dir.rglob("*") if p.is_file()}
    with pytest.raises(StoreError, match=rf"{victim.name}: corrupted part file"):
        runner.run(["seeds"])
    assert {p: p.read_bytes() for p in store.dir.rglob("*") if p.is_file() and "logs" not in str(p)} == snapshot


def test_leftovers_of_a_killed_writer_are_cleaned(tmp_path):
    store = StageStore(tmp_path, "s")
    schema = pa.schema([pa.field("id", pa.string())])
    store.write_batch("k1", [{"id": "a"}], schema, [{"id": "b", "drop_reason": "r"}], ["a", "b"])
    import os
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    (store.dir / f".part-k2.parquet.tmp-{host}-{dead.pid}").write_bytes(b"half")
    alive = store.dir / f".part-k4.parquet.tmp-{host}-{os.getpid()}"
    alive.write_bytes(b"a writer at work")
    orphan = store.dropped_dir / "part-k3.parquet"
    orphan.write_bytes(b"orphan")
    fresh = store.dropped_dir / "part-k5.parquet"
    fresh.write_bytes(b"maybe another shard's, in flight")
    os.utime(orphan, (0, 0))
    assert store.remove_leftovers() == 2
    assert alive.exists() and fresh.exists() and not orphan.exists()
    log = store.commit_log()
    assert log.input_ids == {"a", "b"} and log.rows == 1 and log.dropped == {"r": 1}


def _store_with_rows(tmp_path, n_parts=3):
    store = StageStore(tmp_path, "s")
    schema = pa.schema([pa.field("id", pa.string()), pa.field("text", pa.string())])
    for p in range(n_parts):
        rows = [{"id": f"r{p}{i}", "text": "x"} for i in range(4)]
        store.write_batch(f"k{p}", rows, schema, [], [r["id"] for r in rows])
    return store


def test_drop_plan_is_saved_then_applied_once(tmp_path):
    store = _store_with_rows(tmp_path / "a")
    plan = {"r00": "near_dedup", "r13": "near_dedup", "r21": "near_dedup"}
    assert store.apply_drop_plan(lambda: plan) == 3
    assert store.apply_drop_plan(lambda: pytest.fail("a saved plan must not be recomputed")) == 0
    log = store.commit_log()
    assert log.rows == 9 and log.dropped == {"near_dedup": 3}
    assert sorted(r["id"] for r in store.read_dropped().to_pylist()) == ["r00", "r13", "r21"]
    assert "r13" not in store.read_table()["id"].to_pylist()


def test_drop_plan_interrupted_half_way_finishes_the_same(tmp_path):
    plan = {"r00": "near_dedup", "r13": "near_dedup", "r21": "near_dedup"}
    reference = _store_with_rows(tmp_path / "ref")
    reference.apply_drop_plan(lambda: plan)
    store = _store_with_rows(tmp_path / "b")
    # simulate a crash after the plan was saved and one part rewritten
    store.apply_drop_plan(lambda: {"r00": "near_dedup"})
    (store.dir / "_drop_plan.json").write_text(json.dumps(plan))
    store.apply_drop_plan(lambda: pytest.fail("must use the saved plan"))
    assert sorted(store.read_table()["id"].to_pylist()) == sorted(reference.read_table()["id"].to_pylist())
    assert store.commit_log().dropped == reference.commit_log().dropped
    assert sorted(r["id"] for r in store.read_dropped().to_pylist()) == ["r00", "r13", "r21"]


def test_an_upstream_with_no_rows_is_an_empty_input_not_an_error(tmp_path):
    from pipeline.framework.inputs import StoreSource

    store = StageStore(tmp_path, "up")
    store.begin("fp")
    store.write_manifest({"stage": "up", "rows_in": 0, "rows_out": 0})
    source = StoreSource(store)
    source.require(["instruction", "response"], "down")  # nothing to check: no rows at all
    assert list(source.iter_rows()) == []
    store.write_manifest({"stage": "up", "rows_in": 3, "rows_out": 3})
    with pytest.raises(InputError, match="missing required column"):
        source.require(["instruction"], "down")


@pytest.mark.parametrize("batch_size", [1, 2, 3, 10])
def test_duplicate_input_ids_are_dropped_with_their_own_reason(tmp_path, stdlib_corpus, batch_size):
    """A repeated input id is processed once; each repeat is a dropped row (reason duplicate_input_id) in dropped/
    and in the manifest, wherever it falls (mid-batch, on a boundary, at the very end); a rerun records none twice."""
    runner = make_runner(tmp_path, stdlib_corpus, [f"stages.lengths.batch_size={batch_size}"])
    data = tmp_path / "mine.jsonl"
    names = [("a", "alpha"), ("a", "again"), ("b", "beta"), ("c", "gamma"), ("b", "beta"), ("d", "delta"), ("d", "x")]
    data.write_text("".join(json.dumps({"id": i, "name": n}) + "\n" for i, n in names))
    [manifest] = runner.run(["lengths"], input_override=str(data))
    assert manifest["rows_in"] == 4 and manifest["rows_out"] == 4
    assert manifest["dropped"] == {"duplicate_input_id": 3}
    dropped = runner.store("lengths").read_dropped().to_pylist()
    assert sorted(d["id"] for d in dropped) == ["a", "b", "d"]
    assert {d["drop_reason"] for d in dropped} == {"duplicate_input_id"}
    assert {json.loads(d["duplicate_row"])["name"] for d in dropped} == {"again", "beta", "x"}
    assert [r["name"] for r in rows(runner, "lengths")] == ["alpha", "beta", "gamma", "delta"]
    [again] = runner.run(["lengths"], input_override=str(data), force=True)
    assert again["dropped"] == {"duplicate_input_id": 3}
    store = runner.store("lengths")
    for part in store.part_paths()[1::2]:  # as if killed: some batches lost, the manifest not written
        part.unlink()
        (store.dropped_dir / part.name).unlink(missing_ok=True)
    store.manifest_path.unlink()
    [resumed] = runner.run(["lengths"], input_override=str(data))
    assert resumed["dropped"] == {"duplicate_input_id": 3} and resumed["rows_out"] == 4
