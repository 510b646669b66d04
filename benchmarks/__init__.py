"""Benchmarks of llama-wheels (issue #8): repacking, CPU dispatch, builds. Entry point: ``benchmarks/run.py``.

Every wheel comes from the project's own pipeline (``llama_wheels.pipeline``); nothing here builds
differently. The modules are small and typed; ``worker.py`` is the only one that runs inside the
benchmarked wheel's environment, and it imports nothing from here or from ``llama_wheels``.
"""
