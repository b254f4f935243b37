"""Deduplication: MinHash signatures, LSH near-dedup, and the dataset's sanitize filters.

* :mod:`.minhash`: MinHash signatures of word shingles (equal to datasketch's);
* :mod:`.near_dedup`: candidates, verification, clusters, one kept per cluster;
* :mod:`.sanitize`: the published sanitize predicates of the final dataset.
"""
