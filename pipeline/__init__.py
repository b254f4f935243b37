"""Everything the stages stand on, in layers (docs/architecture.md draws them).

* :mod:`pipeline.framework`: config, stages' shapes, store, inputs, runner, executors, preflight;
  it knows no stage, no backend and no part of the method;
* :mod:`pipeline.llm`: the generation backends behind one interface;
* the method's building blocks, by concern: :mod:`pipeline.analysis` (code files, parsing, type
  checking), :mod:`pipeline.generation` (prompt tasks, few-shot banks, the generation stage base),
  :mod:`pipeline.execution` (programs and verdicts in the sandbox), :mod:`pipeline.dedup`,
  :mod:`pipeline.decontamination`, :mod:`pipeline.benchmarks`, :mod:`pipeline.training`,
  :mod:`pipeline.conversations`, :mod:`pipeline.chat`, :mod:`pipeline.report`, :mod:`pipeline.publishing`;
* the entry points, which may use all of it: :mod:`pipeline.cli` (the command line),
  :mod:`pipeline.reference_docs` (the generated docs) and :mod:`pipeline.gpu_check`.

The stages themselves live in the top-level ``stages`` package.
"""
