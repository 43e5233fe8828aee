"""Privacy on or off: the display's key commands ("toggle", "on", "off").

Only *changes* are logged, and at most one line per ``LOG_INTERVAL_S`` (saying how many changes it
covers): a key held down or a flood of commands must not flood the log (10,001 toggles used to
write 10,002 lines). The first change is logged at once.
"""

from __future__ import annotations

LOG_INTERVAL_S = 1.0


class PrivacySwitch:
    """The privacy mode, and the log line owed about its changes."""

    def __init__(self, on: bool, log_interval: float = LOG_INTERVAL_S) -> None:
        self.on = on
        self.log_interval = log_interval
        self.unreported = 0  # changes since the last log line
        self.last_report = float("-inf")

    def apply(self, command: str) -> bool:
        """Apply "toggle", "on" or "off"; True if privacy changed."""
        before = self.on
        if command == "toggle":
            self.on = not self.on
        elif command in ("on", "off"):
            self.on = command == "on"
        self.unreported += self.on != before
        return self.on != before

    def report(self, now: float) -> str | None:
        """The log line about changes not yet reported, if one is due now."""
        if not self.unreported or now - self.last_report < self.log_interval:
            return None
        n, self.unreported, self.last_report = self.unreported, 0, now
        state = "on" if self.on else "off"
        return f"privacy {state}" if n == 1 else f"privacy {state} ({n} changes)"
