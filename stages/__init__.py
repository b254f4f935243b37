"""The stages of the SelfCodeAlign method, in pipeline order.

Each stage lives in its own module, named as on the command line. A stage
that is planned but not built yet is listed as a ``pipeline.framework.stage.PlannedStage``
with the issue that tracks it, so ``--help`` and ``--status`` show it and
asking it to run says so plainly.
"""

from stages.concepts import ConceptsStage
from stages.dedup import DedupStage
from stages.evaluate import EvaluateStage
from stages.execute import ExecuteStage
from stages.finetune import FinetuneStage
from stages.instructions import InstructionsStage
from stages.preferences import PreferencesStage
from stages.repair import RepairStage
from stages.responses import ResponsesStage
from stages.seeds import SeedsStage

PIPELINE = [
    SeedsStage,
    ConceptsStage,
    InstructionsStage,
    ResponsesStage,
    ExecuteStage,
    RepairStage,
    DedupStage,
    PreferencesStage,
    FinetuneStage,
    EvaluateStage,
]
