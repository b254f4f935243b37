"""The command line: ``python run_pipeline.py --stage all | <stage> ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from pipeline.framework.config import build_config_model, load_config
from pipeline.framework.errors import PipelineError
from pipeline.framework.processes import is_main_process
from pipeline.framework.progress import setup_logging
from pipeline.framework.stage import PlannedStage, Stage
from pipeline.framework.store import ensure_work_dir
from pipeline.report.text import run_summary

DEFAULT_CONFIG = "configs/demo.yaml"


def _stage_list(registry: Sequence[type[Stage] | PlannedStage]) -> str:
    """The epilog of --help: every stage in order, with what it does and whether it is built."""
    lines = ["stages, in order:"]
    for entry in registry:
        note = f"  [not built yet: issue #{entry.issue}]" if isinstance(entry, PlannedStage) else ""
        lines.append(f"  {entry.name:<13} {entry.title}{note}")
    lines.append("")
    lines.append("examples:")
    lines.append("  python run_pipeline.py --config configs/demo.yaml --stage all")
    lines.append("  python run_pipeline.py --config configs/demo.yaml --stage seeds -o stages.seeds.max_seeds=100")
    lines.append("  python run_pipeline.py --config configs/demo.yaml --status")
    lines.append("  python run_pipeline.py --config configs/selfcodealign-sc2-15b.yaml --preflight")
    lines.append("  python run_pipeline.py --config configs/demo.yaml --show-prompt responses --row 0")
    lines.append("  python run_pipeline.py --score answers.jsonl --benchmark humaneval")
    return "\n".join(lines)


def build_parser(registry: Sequence[type[Stage] | PlannedStage]) -> argparse.ArgumentParser:
    """The argument parser; its epilog lists every stage."""
    names = [entry.name for entry in registry]
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description="SelfCodeAlign pipeline: a base code model teaches itself to follow instructions "
        "from its own verified outputs.",
        epilog=_stage_list(registry),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"YAML recipe (default: {DEFAULT_CONFIG})")
    parser.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="set any config key, e.g. -o stages.seeds.max_seeds=100 (repeatable; values parse as YAML)",
    )
    parser.add_argument("--stage", "-s", choices=["all", *names], help="run every stage not done ('all') or one stage")
    parser.add_argument("--from", dest="start", choices=names, metavar="STAGE", help="first stage of a range")
    parser.add_argument("--to", dest="end", choices=names, metavar="STAGE", help="last stage of a range")
    parser.add_argument("--force", action="store_true", help="rerun the selected stages even when done")
    parser.add_argument(
        "--input", "-i", metavar="PATH",
        help="feed the (first) selected stage from a Parquet/JSONL file, a folder of them, or a Hub dataset id",
    )
    parser.add_argument("--status", action="store_true", help="print every stage's state, rows, drops and time")
    parser.add_argument(
        "--preflight", action="store_true",
        help="check the recipe without running a stage (prompt sizes against the context with the model's tokenizer, "
        "the generation budget, sandbox, memory fit, Hub token, work dir) for the selected stages (default: all); "
        "exit 1 when a check fails",
    )
    parser.add_argument("--no-preflight", action="store_true",
                        help="skip the preflight that a multi-stage run (--stage all, --from/--to) does first")
    parser.add_argument("--report", action="store_true", help="write work_dir/report.html and print the funnel and pass@1")
    parser.add_argument(
        "--show-prompt", metavar="STAGE", choices=names,
        help="print the prompt STAGE renders for one of its input rows (the first, or --row), loading no model: "
        "chat turns or completion text; bank examples stand in when its input does not exist yet",
    )
    parser.add_argument("--row", metavar="ID", help="with --show-prompt: the input row's id, or its index (0 first)")
    parser.add_argument(
        "--shard", metavar="K/N", type=_shard,
        help="with --stage NAME: process only the input rows whose id hashes to K mod N (K from 0); shards may run "
        "side by side (Slurm arrays, Kubernetes jobs) into one work dir; the last to finish writes the manifest",
    )
    parser.add_argument("--merge", action="store_true",
                        help="with --stage NAME: write the manifest of a stage whose N shards have all finished")
    parser.add_argument(
        "--publish-dry-run", metavar="DIR", type=Path,
        help="write exactly what publishing the selected (done) stages would upload into DIR",
    )
    parser.add_argument("--publish", action="store_true", help="push the selected done stages to the Hub (hub.*)")
    parser.add_argument(
        "--score", metavar="ANSWERS.jsonl", type=Path,
        help="score a file of answers made anywhere (task_id and completion or solution per line) in the sandbox; "
        "needs --benchmark",
    )
    parser.add_argument("--benchmark", metavar="NAME",
                        help="with --score: humaneval, humaneval+, mbpp+, mbpp, or a benchmark file ([name=]path)")
    chat = parser.add_argument_group("chat")
    chat.add_argument("--chat", action="store_true",
                      help="talk to the model the recipe trained in the terminal: streamed answers in the model's "
                      "chat format, /reset starts over, /exit leaves")
    chat.add_argument("--model", metavar="PATH",
                      help="chat with this model instead (directory, .gguf, or the served name for the openai "
                      "backend); implies --chat")
    chat.add_argument("--temperature", type=float, metavar="T",
                      help="chat sampling temperature (default 0.2; 0 is greedy)")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="chat: most new tokens per answer (default 512)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"], help="console log level")
    return parser


def _shard(text: str) -> tuple[int, int]:
    """Parse K/N (0 <= K < N)."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/4, got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard {text}: K must be in 0..N-1")
    return k, n


def main(registry: Sequence[type[Stage] | PlannedStage], argv: Sequence[str] | None = None) -> int:
    """Parse arguments, validate the config, and run, report or publish; return the exit code."""
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    if (args.shard or args.merge) and (not args.stage or args.stage == "all"):
        parser.error("--shard and --merge need --stage NAME (one stage)")
    if args.row is not None and not args.show_prompt:
        parser.error("--row goes with --show-prompt STAGE")
    if bool(args.score) != bool(args.benchmark):
        parser.error("--score and --benchmark go together: --score ANSWERS.jsonl --benchmark NAME")
    args.chat = args.chat or args.model is not None
    if not (args.chat or args.stage or args.start or args.end or args.status or args.publish_dry_run or args.publish
            or args.report or args.preflight or args.score or args.show_prompt):
        parser.print_help()
        return 0
    from pipeline.framework.runner import Runner

    runner = None
    try:
        stage_configs = {e.name: None if isinstance(e, PlannedStage) else e.Config for e in registry}
        model = build_config_model(stage_configs, _model_config_class())
        config = load_config(args.config, model, args.override)
        runner = Runner(config, registry)
        if args.status:
            print(run_summary(runner.states()))
            return 0
        if args.score:
            return _score(args, config)
        if args.show_prompt:
            header, prompt = _show_prompt(runner, args.show_prompt, args.row, args.input)
            print(header, file=sys.stderr)
            print(prompt)
            return 0
        if args.chat:
            from pipeline.chat.command import chat_command

            setup_logging(None, "WARNING" if args.log_level == "INFO" else args.log_level)
            return chat_command(config, runner, args.model, args.temperature, args.max_tokens)
        names = runner.select(args.stage, args.start, args.end)
        multi_stage = args.stage == "all" or ((args.start or args.end) and not args.stage)
        if args.preflight or (multi_stage and config.run.preflight and not args.no_preflight
                              and not (args.shard or args.merge)):
            passed = _preflight(runner, names)
            if args.preflight or not passed:
                return 0 if passed else 1
        if args.stage or args.start or args.end or args.report:
            ensure_work_dir(config.run.work_dir)  # a one-line error before anything is written
        log_path = setup_logging(config.run.work_dir, args.log_level)
        log = logging.getLogger("pipeline")
        log.info("config %s, work dir %s, log %s", args.config, config.run.work_dir, log_path)
        if args.merge:
            runner.merge(args.stage, input_override=args.input)
        elif args.shard:
            if runner.state(args.stage).state == "done":
                log.info("%s: done, nothing to run for shard %s", args.stage, args.shard)
            else:
                runner.run_stage(args.stage, force=args.force, input_override=args.input, shard=args.shard)
        elif args.stage or args.start or args.end:
            runner.run(names, force=args.force, input_override=args.input)
            if is_main_process():  # the other processes of an accelerate launch stay quiet
                print(run_summary(runner.states()))
        publishing = args.publish or (config.hub.namespace and (args.stage or args.start or args.end))
        if (args.publish_dry_run or publishing) and is_main_process():
            from pipeline.publishing.hub import publish

            built = [n for n in names if not isinstance(runner.entry(n), PlannedStage)]
            publish(runner, built, dry_run_dir=args.publish_dry_run)
        if args.report:
            from pipeline.report import write_report

            print(write_report(runner))
        return 0
    except PipelineError as exc:
        if runner is not None and (args.stage or args.start or args.end):
            try:
                print(run_summary(runner.states()))  # what was done before the error
            except PipelineError:
                pass
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every committed batch is kept; rerun the same command to resume", file=sys.stderr)
        return 130


def _score(args, config) -> int:
    """``--score``: the answers file's scores on the benchmark, printed (settings from stages.evaluate)."""
    from pipeline.benchmarks.scoring import score_answers, score_lines

    settings = getattr(config.stages, "evaluate", None)
    if settings is None:
        from pipeline.benchmarks.settings import EvaluateConfig

        settings = EvaluateConfig()
    setup_logging(config.run.work_dir, args.log_level)
    outcome = score_answers(args.score, args.benchmark, settings, Path(config.run.work_dir))
    print("\n".join(score_lines(outcome)))
    return 0


def _show_prompt(runner, stage: str, row: str | None, input_override: str | None) -> tuple[str, str]:
    """``--show-prompt``: a header line saying which row and form, and the stage's rendered prompt for it."""
    picked, where, prompt = runner.rendered_prompt(stage, row, input_override)
    if isinstance(prompt, str):
        return f"# {stage}: completion prompt for row {picked.get('id')} ({where})", prompt
    turns = "\n".join(f"--- {m['role']} ---\n{m['content']}" for m in prompt)
    return f"# {stage}: chat prompt, {len(prompt)} messages, for row {picked.get('id')} ({where})", turns


def _preflight(runner, names: list[str]) -> bool:
    """Print the preflight table of ``names`` and one line per failure (on stderr); True when all passed."""
    from pipeline.framework.preflight import run_preflight

    report = run_preflight(runner, names)
    print("preflight:")
    print(report.table())
    for line in report.problem_lines():
        print(line, file=sys.stderr)
    if report.ok:
        print(f"preflight passed ({len(report.checks)} checks)")
    else:
        print(f"preflight failed: {len(report.failures)} of {len(report.checks)} checks; nothing was run "
              "(--no-preflight or run.preflight: false skips the preflight)", file=sys.stderr)
    return report.ok


def _model_config_class():
    """The generation backend's config class, when the llm package provides one."""
    try:
        from pipeline.llm.config import LLMConfig
    except ImportError:
        return None
    return LLMConfig
