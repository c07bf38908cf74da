"""The phases of a training run, one module each: sft, reward, and one per algorithm.

Each module has a `run_phase(run, loaded, sets, ...)` that trains in place on the run's
shared state (trainer/run.py), restores instead of recomputing what an earlier attempt
of the run finished, and returns its metrics. The policy phases are found through the
algorithm registry (trainer/algorithms.py); pipeline.py runs them in order.
"""
