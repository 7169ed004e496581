"""Runs as the entry points see them: train one (``training``), rebuild one from its checkpoint
(``checkpoints``), list a sweep's jobs (``sweep_jobs``), and report bad input in one line
(``cli``)."""
