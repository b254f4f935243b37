"""Talking to a model: the technical-assistant preamble for base models, a chat session, the terminal chat.

* :mod:`.preamble`: a system text and worked dialogues (``configs/tech-assistant.yaml``)
  that make a base model answer in turns, as plain text or as chat messages;
* :mod:`.session`: one conversation with any backend, streamed, in the model's own chat format;
* :mod:`.terminal`: the read-reply loop behind ``run_pipeline.py --chat`` (``/reset``, ``/exit``).
"""
