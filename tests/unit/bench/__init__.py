"""bench/: the benchmark's pure parts (its runs start processes: not here)."""
