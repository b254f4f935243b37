"""The framework: what every stage stands on, knowing no stage and no part of the method.

* :mod:`.config`: typed recipes, overrides, fingerprint views;
* :mod:`.stage`: the two stage shapes (map over batches, whole input) and what a stage declares;
* :mod:`.filters`: named filters, each declared once (name, default, scope, reason), and their chains;
* :mod:`.store`: Parquet parts written atomically, drops, manifests;
* :mod:`.inputs` and :mod:`.jsonl`: where input rows come from (upstream, files, the Hub);
* :mod:`.runner` and :mod:`.map_runner`: states, fingerprints, batching, resuming, sharding;
* :mod:`.executors`: where batches run (this machine, Ray), knowing nothing of what a batch does;
* :mod:`.ids`: stable ids and every seeded choice; :mod:`.text`: the whitespace normaliser;
* :mod:`.preflight`, :mod:`.summary`, :mod:`.progress`, :mod:`.processes`, :mod:`.errors`.

Nothing here imports a method package (``pipeline.analysis``, ``pipeline.generation``, ...), a
backend (``pipeline.llm``) or a stage; ``tests/test_architecture.py`` checks that from the import graph.
"""
