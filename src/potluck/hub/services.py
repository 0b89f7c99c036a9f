"""The hub's services, built once by the composition root (app.py) and shared by the adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potluck.hub.cluster import Cluster  # needs Redis: the `cluster` extra

from dataclasses import dataclass

from potluck._shared.clock import Clock
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting
from potluck.hub.accounts import Accounts
from potluck.hub.agents import Agents
from potluck.hub.aliases import Aliases
from potluck.hub.auth import AdminAuth
from potluck.hub.claims import Claims
from potluck.hub.credits import Credits
from potluck.hub.gate import AgentGate
from potluck.hub.groups import Groups
from potluck.hub.health import Health
from potluck.hub.invites import Invites
from potluck.hub.keys import Keys
from potluck.hub.lifecycle import Lifecycle
from potluck.hub.limits import RateLimiter
from potluck.hub.metering import UsageJournal
from potluck.hub.metrics import HubMetrics
from potluck.hub.observe_stream import Dashboards
from potluck.hub.observe_usage import UsageCharts
from potluck.hub.registry import Registry
from potluck.hub.reports import Reports
from potluck.hub.requests import RequestOwner
from potluck.hub.settings import HubSettings
from potluck.hub.spotcheck import SpotChecker


@dataclass(slots=True)
class HubServices:
    settings: HubSettings
    clock: Clock
    keys: Keys
    admin: AdminAuth
    registry: Registry
    requests: RequestOwner
    gate: AgentGate
    lifecycle: Lifecycle
    journal: UsageJournal
    metrics: HubMetrics
    accounts: Accounts
    groups: Groups
    invites: Invites
    agents: Agents
    aliases: Aliases
    credits: Credits
    reports: Reports
    health: Health
    access: AccessMap
    limiter: RateLimiter
    accounting: Accounting
    claims: Claims
    spot_checks: SpotChecker
    dashboards: Dashboards
    charts: UsageCharts
    cluster: Cluster | None = None
    """This replica's place in a cluster (``--redis-url``); None on a single hub."""
