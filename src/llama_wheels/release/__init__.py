"""Releases: the append-only package index, inspection of built wheels, and publishing."""
