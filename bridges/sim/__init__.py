"""Provider simulators: each one is the provider as PROVIDERS.md describes it, never the driver."""
