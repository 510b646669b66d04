"""The judges of a built wheel: the emulated CPU matrix, the smoke test of ``llama-wheels build`` and the
ISA audit's wiring. They read the wheel and its record; they never build."""
