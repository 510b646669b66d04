"""Standard-library-only modules (numpy and gguf for the models) that also run outside this package: inside an
emulated Python, next to the wheel tests. Others find them by import (``module.__file__``), never by a path
string."""
