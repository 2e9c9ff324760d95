"""Evaluation: the paper's closed-loop protocol (`evaluate`), the surprise test (`surprise_test`) and
the CPU demo of the whole mission (`run_demo`)."""

from lewm_fast.evaluation.closed_loop import evaluate
from lewm_fast.evaluation.protocol import EvalConfigError, load_checkpoint, select_problems

__all__ = ["EvalConfigError", "evaluate", "load_checkpoint", "select_problems"]
