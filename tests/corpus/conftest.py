"""The corpus scripts are run by tests/test_corpus.py as users run them, never imported.

Several of them run their experiments at import (notebooks converted cell by cell,
scripts without a main guard), so pytest's --doctest-modules must not collect them.
"""

collect_ignore_glob = ["*.py"]
