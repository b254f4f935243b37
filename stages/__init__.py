"""The stages of the SelfCodeAlign method, in pipeline order.

Each built stage lives in its own module named as on the command line; the
ones not built yet are listed with the issue that tracks them, so ``--help``
and ``--status`` show the whole method and asking one to run says so plainly.
"""

from pipeline.stage import PlannedStage
from stages.concepts import ConceptsStage
from stages.dedup import DedupStage
from stages.evaluate import EvaluateStage
from stages.execute import ExecuteStage
from stages.finetune import FinetuneStage
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
    FinetuneStage,
    EvaluateStage,
]
