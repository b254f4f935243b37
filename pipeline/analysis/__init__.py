"""Code analysis for the seeds: reading code files, parsing Python sources, type checking.

* :mod:`.code_files`: code corpora as input sources (folders, tables of files, the Hub).
* :mod:`.pysource`: top-level functions with docstrings and the facts the filters test.
* :mod:`.typecheck`: batched runs of a pyright-family checker.
"""
