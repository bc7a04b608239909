"""Provider simulators: each one is the provider as docs/providers.md has it, never the driver.

In-process use: `await task_group.start(serve_simulators, ["all"])` gives a
`SimulatorHandle` (URL, per-provider config and counters); `septet simulate` serves them
standalone. See bridges/sim/runner.py for the control endpoints under /_sim/.
"""

from bridges.sim.core import SimulatorConfig
from bridges.sim.runner import PROVIDERS, SimulatorHandle, serve_simulators

__all__ = ["PROVIDERS", "SimulatorConfig", "SimulatorHandle", "serve_simulators"]
