"""Supervised fine-tuning support for the finetune stage.

* :mod:`pipeline.training.formats`: chat formats (the instruction/response
  layout and a ChatML-style one with special tokens), rendered both as Jinja
  chat templates and in Python with the answer spans that receive the loss;
* :mod:`pipeline.training.data`: tokenisation with assistant-only labels,
  truncation, padding collation and packing;
* :mod:`pipeline.training.memory`: a memory estimate for full fine-tuning with
  Adafactor, and ``python -m pipeline.training.memory``;
* :mod:`pipeline.training.modeling`: resolving, loading and preparing the
  model (dropout, added tokens);
* :mod:`pipeline.training.plot`: the loss curve.
"""
