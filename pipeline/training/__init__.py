"""Fine-tuning for the finetune stage: SFT as published, DPO and GRPO beyond it.

* :mod:`pipeline.training.settings`: the stage's settings (the paper's recipe by default);
* :mod:`pipeline.training.formats`: chat formats (the instruction/response
  layout and a ChatML-style one with special tokens), rendered both as Jinja
  chat templates and in Python with the answer spans that receive the loss;
* :mod:`pipeline.training.data`: tokenisation with assistant-only labels,
  truncation, padding collation and packing;
* :mod:`pipeline.training.conversation`: the ``messages`` rows the pipeline writes;
* :mod:`pipeline.training.memory`, :mod:`pipeline.training.layouts`, :mod:`pipeline.training.fit`: memory
  estimates (one device, multi-GPU layouts, adapters) and the fit check, and ``python -m pipeline.training.memory``;
* :mod:`pipeline.training.modeling`, :mod:`pipeline.training.adapters`: resolving, loading and preparing the
  model (dropout, added tokens, LoRA / QLoRA);
* :mod:`pipeline.training.trainers`: the training arguments and the objective's trainer, run with resume;
* :mod:`pipeline.training.pairs`, :mod:`pipeline.training.preference`, :mod:`pipeline.training.rewards`:
  preference pairs and DPO, sandbox rewards and GRPO;
* :mod:`pipeline.training.saving`: the model saved for generation, and found again from the manifest;
* :mod:`pipeline.training.outcome`, :mod:`pipeline.training.plot`: the manifest's training report, the loss curve;
* :mod:`pipeline.training.distributed`, :mod:`pipeline.training.resume`: multi-process launches, checkpoints.
"""
