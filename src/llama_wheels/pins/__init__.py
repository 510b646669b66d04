"""Pin intake: adding a llama-cpp-python release to build_config/pins.toml (carrying the patches forward) and
checking the pins against their sources."""
