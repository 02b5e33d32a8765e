"""One training run: its config, its loop, and `one.run_one`, the assembly every caller shares."""
