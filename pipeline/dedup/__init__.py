"""Deduplication: MinHash signatures, LSH near-dedup, the dataset's sanitize predicates, the dedup stage's filters.

* :mod:`.minhash`: MinHash signatures of word shingles (equal to datasketch's);
* :mod:`.near_dedup`: candidates, verification, clusters, one kept per cluster;
* :mod:`.sanitize`: the published sanitize predicates of the final dataset;
* :mod:`.filters`: the dedup stage's steps, each a named filter declared once.
"""
