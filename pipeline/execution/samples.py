"""The columns of an executed sample, as the stages that write and read samples share them."""

from __future__ import annotations

import pyarrow as pa

#: The first columns of a sample row, as the repair stage writes them and the dedup stage keeps them.
SAMPLE_COLUMNS = {
    "id": (pa.string(), "the sample id"),
    "seed_id": (pa.string(), "the seed this row comes from"),
    "instruction_id": (pa.string(), "the instruction answered"),
    "instruction": (pa.string(), "the instruction"),
    "response": (pa.string(), "the response"),
}
