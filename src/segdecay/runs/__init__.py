"""Using finished runs: the run-folder contract (folder), scoring a run on a split
(evaluate), and masks for new images (predict)."""

from segdecay.runs.evaluate import evaluate_run
from segdecay.runs.folder import find_runs, is_run_folder, load_run
from segdecay.runs.predict import predict_paths

__all__ = ["evaluate_run", "find_runs", "is_run_folder", "load_run", "predict_paths"]
