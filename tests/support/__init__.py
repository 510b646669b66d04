"""What the tests share (no test module imports another): the checkout and its command line, small
real wheels, the index server, the pinned ggml text, zig-built binaries."""
