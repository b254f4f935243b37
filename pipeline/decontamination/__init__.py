"""Decontamination: does a text contain (or sit inside) a benchmark problem?

* :mod:`.index`: the whitespace-insensitive index and the benchmarks a stage checks against;
* :mod:`.benchmark_data`: benchmarks other than HumanEval (MBPP, DS-1000) from the Hub or local copies.
"""
