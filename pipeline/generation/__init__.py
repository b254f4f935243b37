"""Generation: prompt tasks, the few-shot banks, and the base of the stages that prompt the model.

* :mod:`.prompting`: a task's prompt (completion or chat form) and the parsing of its answer;
* :mod:`.fewshot`: the example banks and reproducible draws from them;
* :mod:`.stage`: the generation stage base (prompt per row, seeded sampling, parsing, drops);
* :mod:`.budget`: preflight checks of prompt sizes and token budgets;
* :mod:`.docstring_judge`: the seeds' yes/no docstring judge, built on the same prompt code.

The model that answers lives in :mod:`pipeline.llm`; nothing here knows which backend it is.
"""
