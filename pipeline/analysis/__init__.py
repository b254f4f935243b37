"""Code analysis for the seeds: reading code files, parsing Python sources, type checking, the seeds' filters.

* :mod:`.code_files`: code corpora as input sources (folders, tables of files, the Hub), and the seeds' ``source``;
* :mod:`.pysource`: top-level functions with docstrings and the facts the filters test;
* :mod:`.typecheck`: batched runs of a pyright-family checker;
* :mod:`.seed_filters`: the seeds stage's filters, each declared once.
"""
