"""The generated reference docs are in step with the code."""

from pipeline.reference_docs import generated_docs
from tests.conftest import REPO


def test_reference_docs_are_current():
    for name, text in generated_docs().items():
        on_disk = (REPO / "docs" / name).read_text()
        assert on_disk == text, f"docs/{name} is out of date: run python -m pipeline.reference_docs"
