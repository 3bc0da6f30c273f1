"""The alert policy: a pure state machine handed timestamps.

Raises when the negative share stays >= raise_share for raise_after_s with at least
min_faces faces; clears when it stays below clear_share (hysteresis; a share of 0 always
counts) for clear_after_s;
no new alert until cooldown_s after a clear.
"""

from __future__ import annotations

from edge.config import AlertConfig


class AlertPolicy:
    def __init__(self, cfg: AlertConfig | None = None):
        self.cfg = cfg or AlertConfig()
        self.raised = False
        self._since: float | None = None  # when the condition for the next transition began
        self._cooldown_until = float("-inf")

    @property
    def state(self) -> str:
        return "raised" if self.raised else "clear"

    def update(self, t_s: float, negative_share: float, faces: int) -> str | None:
        """Advance to time t_s; returns "raised" or "cleared" on a transition, else None."""
        if not self.raised:
            hot = self._unhappy(negative_share, faces) and t_s >= self._cooldown_until
            if self._held(hot, t_s, self.cfg.raise_after_s):
                self.raised = True
                return "raised"
            return None
        # A share of 0 is calm under any threshold: clear_share = 0 would otherwise never clear.
        calm = negative_share <= 0 or negative_share < self.cfg.clear_share
        if self._held(calm, t_s, self.cfg.clear_after_s):
            self.raised = False
            self._cooldown_until = t_s + self.cfg.cooldown_s
            return "cleared"
        return None

    def held_back_s(self, t_s: float, negative_share: float, faces: int) -> float | None:
        """While the queue would raise an alert (update()'s share and faces test) but the cooldown
        after the last clear holds it back: the seconds until the earliest a new one can be raised
        (the cooldown's end plus raise_after_s: the raise timer starts only then); else None.
        Only reads the state: what to show beside a "clear" that contradicts the figures."""
        if self.raised or t_s >= self._cooldown_until or not self._unhappy(negative_share, faces):
            return None
        return self._cooldown_until + self.cfg.raise_after_s - t_s

    def raising_since(self) -> float | None:
        """While clear: when the raise timer began (the queue unhappy enough since, not yet for
        raise_after_s); else None. Only reads the state: what a recording's end cut short."""
        return None if self.raised else self._since

    def _unhappy(self, negative_share: float, faces: int) -> bool:
        """The queue is unhappy enough to raise an alert (the cooldown and the timer aside)."""
        return faces >= self.cfg.min_faces and negative_share >= self.cfg.raise_share

    def _held(self, condition: bool, t_s: float, need_s: float) -> bool:
        """Whether `condition` has held without a break for need_s up to t_s (the hysteresis timer)."""
        if not condition:
            self._since = None
            return False
        self._since = t_s if self._since is None else self._since
        if t_s - self._since >= need_s:
            self._since = None
            return True
        return False
