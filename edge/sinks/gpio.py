"""Drives an LED or buzzer on a BCM pin: on while an alert is raised (or for its first `on_s`
seconds), off once it clears and while the camera is down."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

from edge.errors import UserError, check, check_range, missing_dependency
from edge.sinks.base import AlertEvent, Sink, SinkUnavailable, register

log = logging.getLogger(__name__)


@dataclass
class GpioSinkConfig:
    """Alert sink: an LED or buzzer on a GPIO pin, on while the alert is raised."""

    pin: int = 17  # BCM pin number
    device: str = "led"  # led | buzzer
    active_high: bool = True  # false when the pin sinks the current (on = low)
    # seconds on when an alert is raised, then off until the next one; 0: on as long as it is
    # raised. A buzzer wants a few (staff cannot bear one that sounds through a 20-minute alert).
    on_s: float = 0.0

    def validate(self, p):
        check(self.device in ("led", "buzzer"), f"{p}.device", self.device, "led, buzzer")
        check(0 <= self.pin <= 27, f"{p}.pin", self.pin, "a BCM pin number 0-27")
        check_range(self.on_s, 0, 3600, f"{p}.on_s", "seconds (0: as long as the alert)")


@register
class GpioSink(Sink):
    key = "gpio"
    Config = GpioSinkConfig
    order = 40

    def __init__(self, pin: int = 17, device: str = "led", active_high: bool = True, on_s: float = 0.0):
        try:
            import gpiozero
            from gpiozero.exc import BadPinFactory, NativePinFactoryFallback, PinFactoryFallback
        except ImportError:
            raise SinkUnavailable(str(missing_dependency("gpiozero", "gpio"))) from None
        cls = {"led": gpiozero.LED, "buzzer": gpiozero.Buzzer}.get(device)
        if cls is None:
            raise UserError(f"GPIO device {device!r} is not supported; use led or buzzer.")
        # gpiozero warns once per pin library it cannot load (four on a machine without GPIO):
        # one line here instead.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self._out = cls(pin, active_high=active_high, initial_value=False)
            except Exception as exc:  # noqa: BLE001 - gpiozero's errors and its pin library's (lgpio: 'GPIO busy')
                error = exc
            else:
                error = None
        tried = []
        for w in caught:
            if issubclass(w.category, (PinFactoryFallback, NativePinFactoryFallback)):
                tried.append(str(w.message).removeprefix("Falling back from "))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if error is not None:
            why = "; ".join([str(error).rstrip(".!") or type(error).__name__, *tried])
            # no pin library at all: on a Pi, the venv lacks apt's lgpio (not a question of the pin)
            ask = ("On a Raspberry Pi, install its pin library: sudo apt install python3-lgpio (install.sh does); "
                   "other machines have no GPIO." if isinstance(error, BadPinFactory)
                   else "Is this a Raspberry Pi, and is the pin free?")
            raise SinkUnavailable(f"Cannot use GPIO pin {pin} for the {device} ({why}). {ask}") from error
        if tried:
            log.info("GPIO pin %d: gpiozero fell back to another pin library (%s).", pin, "; ".join(tried))
        self.pin, self.device, self.on_s = pin, device, on_s
        self._raised = False  # the alert's state, for the output again once the camera is back
        self._sounded = False  # with on_s: this alert has had its on_s seconds (not again at camera_up)

    @classmethod
    def doctor_config(cls, cfg: GpioSinkConfig, service_running: bool):
        if service_running:
            return f"{cfg.device} on BCM pin {cfg.pin}: not claimed, the running queue-mood service holds it"
        return cfg

    @property
    def is_on(self) -> bool:
        return bool(self._out.value)

    def send(self, event: AlertEvent) -> None:
        # While the camera is down the alert is not asserted (status page and MQTT say unknown): a
        # buzzer that sounded when the camera died sounded until it was back, all night maybe.
        if event.kind in ("raised", "cleared"):
            self._raised = event.kind == "raised"
            self._sounded = False
        on = self._raised and event.kind != "camera_down"
        if not on:
            self._out.off()  # also ends an on_s period still running
        elif not self.on_s:
            self._out.on()
        elif not self._sounded:  # gpiozero's own thread switches it off after on_s
            self._sounded = True
            self._out.blink(on_time=self.on_s, off_time=0, n=1, background=True)
        self.delivered += 1

    def close(self) -> None:
        if not self._out.closed:
            self._out.off()  # never leave a buzzer sounding after the monitor stops
            self._out.close()

    def check(self) -> str:
        return f"{self.device} on BCM pin {self.pin} ({'on' if self.is_on else 'off'})"
