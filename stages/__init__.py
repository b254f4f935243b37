"""The stages of the SelfCodeAlign method, in pipeline order.

Each built stage lives in its own module named as on the command line; the
ones not built yet are listed with the issue that tracks them, so ``--help``
and ``--status`` show the whole method and asking one to run says so plainly.
"""

from pipeline.stage import PlannedStage
from stages.concepts import ConceptsStage
from stages.dedup import DedupStage
from stages.execute import ExecuteStage
from stages.instructions import InstructionsStage
from stages.responses import ResponsesStage
from stages.seeds import SeedsStage

PIPELINE = [
    SeedsStage,
    ConceptsStage,
    InstructionsStage,
    ResponsesStage,
    ExecuteStage,
    DedupStage,
    PlannedStage("finetune", "Supervised fine-tuning with Adafactor, loss on the answers only", "dedup", 6),
    PlannedStage("evaluate", "HumanEval pass@1 in the sandbox, base vs fine-tuned", "finetune", 7),
]
