"""Live run state on loopback (Prometheus text, monitor.json); alerts to the ledger, a webhook."""

from fedsafe.server.monitor.alerts import RULES, Alert
from fedsafe.server.monitor.metrics import MetricsServer, MonitorError
from fedsafe.server.monitor.monitor import Monitor
from fedsafe.server.monitor.observed import ObservedRecorder, recorder_for
from fedsafe.server.monitor.state import STATE_FILE, RunState

__all__ = [
    "RULES",
    "STATE_FILE",
    "Alert",
    "MetricsServer",
    "Monitor",
    "MonitorError",
    "ObservedRecorder",
    "RunState",
    "recorder_for",
]
