#!/usr/bin/env python3
"""Run the SelfCodeAlign pipeline: ``python run_pipeline.py --config configs/demo.yaml --stage all``."""

import sys

from pipeline.cli import main
from stages import PIPELINE

if __name__ == "__main__":
    sys.exit(main(PIPELINE))
