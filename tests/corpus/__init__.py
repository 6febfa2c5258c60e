"""Public example scripts, run by tests/test_corpus.py (a package so its conftest is its own)."""
