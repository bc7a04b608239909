"""septet bridge drivers: one sans-IO driver per provider, and provider simulators."""
