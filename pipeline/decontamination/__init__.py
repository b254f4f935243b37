"""Decontamination: does a text contain (or sit inside) a benchmark problem?

* :mod:`.entries`: benchmark problems as needles and haystacks (HumanEval, JSONL files);
* :mod:`.index`: the whitespace-insensitive index that answers the question fast;
* :mod:`.benchmark_data`: benchmarks other than HumanEval (MBPP, DS-1000) from the Hub or local copies;
* :mod:`.sources`: what a stage checks against (HumanEval, ``benchmarks``, ``benchmark_files``).
"""
