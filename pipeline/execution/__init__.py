"""Execution: programs built from answers, run in the sandbox, their verdicts cached.

* :mod:`.verdicts`: program assembly, the verdict cache, the sandbox session and its preflight;
* :mod:`.samples`: the columns of an executed sample, shared by the stages that write and read samples.
"""
