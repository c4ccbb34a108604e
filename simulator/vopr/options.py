"""What one simulator run is: its seed, its size, and what it plants or leaves out."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.vopr.planted import PLANTS


@dataclass(frozen=True)
class VoprOptions:
    seed: int = 1
    sales: int = 10_000  # taps the diners make
    terminals: int = 4
    diners_per_terminal: int = 25
    steps: int | None = None  # cut the workload after this step: a prefix of the run (shrinking)
    plant: str | None = None  # a known bug to plant (simulator.vopr.planted)
    faults: bool = True
    fault_scale: float = 1.0
    # terminals without a real-time clock: a power cut sets the clock back until NTP steps
    # it (finds sales misdated by a stale clock offset: see the README)
    wild_clocks: bool = False

    def __post_init__(self) -> None:
        if self.terminals < 1 or self.sales < 0 or self.diners_per_terminal < 1:
            raise ValueError("need terminals ≥ 1, sales ≥ 0, diners per terminal ≥ 1")
        if self.plant is not None and self.plant not in PLANTS:
            raise ValueError(f"unknown planted bug {self.plant!r}; one of {', '.join(PLANTS)}")
