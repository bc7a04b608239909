"""septet engine: models, segmentation, scheduling, I/O, daemon and CLI."""
