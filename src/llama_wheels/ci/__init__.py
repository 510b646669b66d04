"""Continuous integration: the generated workflows and cibuildwheel settings, the cibuildwheel hooks (which
call the pipeline) and the locked requirement files."""
