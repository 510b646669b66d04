"""Report generators: build the wheels a report compares through the pipeline, judge them, and write the
report (the repacking report of the default pin, the legacy 0.3.4 report)."""
