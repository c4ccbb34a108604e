"""What the parts of a run see of it: the :class:`Sim` the faults, the workload and the
checks are handed (:class:`simulator.vopr.run.Vopr` is one). A protocol here, so those
modules need not import the run that imports them."""

from __future__ import annotations

from typing import Any, Protocol

from simulator.vopr.clock import SimTime
from simulator.vopr.network import SimBroker
from simulator.vopr.options import VoprOptions
from simulator.vopr.server_node import ServerNode
from simulator.vopr.terminal_node import TerminalNode
from simulator.vopr.thief import Thief
from simulator.vopr.world import World


class Sim(Protocol):
    opts: VoprOptions
    step_no: int
    time: SimTime
    broker: SimBroker
    server: ServerNode
    nodes: list[TerminalNode]
    world: World
    thief: Thief
    refund_to: str
    workload: Any  # simulator.vopr.workload.Workload
    checks: Any  # simulator.vopr.checks.Checks
