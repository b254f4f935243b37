"""Benchmarks as data and one harness to score them (the evaluate stage and ``--score`` stand on it).

- :mod:`.problems`     a problem and a benchmark, whatever the file format
- :mod:`.formats`      reading HumanEval, EvalPlus (HumanEval+ / MBPP+) and MBPP files
- :mod:`.differential` EvalPlus-style tests: agree with the reference on every input
- :mod:`.catalog`      the built-in benchmarks, downloads, ``name=path`` files
- :mod:`.answers`      prompt formats (completion, chat) and reading answers into solutions
- :mod:`.harness`      programs in the sandbox, time limits scaled from the reference's runtime
- :mod:`.passk`        the unbiased pass@k estimator
- :mod:`.results`      scores per benchmark and model, the side-by-side table, flipped problems
- :mod:`.contenders`   the models compared and how each is prompted
- :mod:`.judge`        a model as judge, both orders, a written rubric
- :mod:`.scoring`      ``--score ANSWERS.jsonl --benchmark NAME``
- :mod:`.source`       benchmarks as a stage input
- :mod:`.settings`     the evaluate stage's config
- :mod:`.summary`      the stage's manifest fields (results, flips, judge) and its log table
"""
