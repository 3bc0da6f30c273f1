"""Drives an LED or buzzer on a BCM pin: on while an alert is raised, off once it clears."""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import UserError, check, missing_dependency
from edge.sinks.base import AlertEvent, Sink, register


@dataclass
class GpioSinkConfig:
    """Alert sink: an LED or buzzer on a GPIO pin, on while the alert is raised."""

    pin: int = 17  # BCM pin number
    device: str = "led"  # led | buzzer
    active_high: bool = True  # false when the pin sinks the current (on = low)

    def validate(self, p):
        check(self.device in ("led", "buzzer"), f"{p}.device", self.device, "led, buzzer")
        check(0 <= self.pin <= 27, f"{p}.pin", self.pin, "a BCM pin number 0-27")


@register
class GpioSink(Sink):
    key = "gpio"
    Config = GpioSinkConfig
    order = 40

    def __init__(self, pin: int = 17, device: str = "led", active_high: bool = True):
        try:
            import gpiozero
        except ImportError:
            raise missing_dependency("gpiozero", "gpio") from None
        cls = {"led": gpiozero.LED, "buzzer": gpiozero.Buzzer}.get(device)
        if cls is None:
            raise UserError(f"GPIO device {device!r} is not supported; use led or buzzer.")
        try:
            self._out = cls(pin, active_high=active_high, initial_value=False)
        except gpiozero.GPIOZeroError as exc:
            raise UserError(f"Cannot use GPIO pin {pin} for the {device} ({str(exc).rstrip('.!')}). "
                            "Is this a Raspberry Pi, and is the pin free?") from exc
        self.pin, self.device = pin, device

    @classmethod
    def doctor_config(cls, cfg: GpioSinkConfig, service_running: bool):
        if service_running:
            return f"{cfg.device} on BCM pin {cfg.pin}: not claimed, the running queue-mood service holds it"
        return cfg

    @property
    def is_on(self) -> bool:
        return bool(self._out.value)

    def send(self, event: AlertEvent) -> None:
        if event.kind == "raised":
            self._out.on()
        elif event.kind == "cleared":
            self._out.off()
        # camera events leave the output as it is
        self.delivered += 1

    def close(self) -> None:
        if not self._out.closed:
            self._out.off()  # never leave a buzzer sounding after the monitor stops
            self._out.close()

    def check(self) -> str:
        return f"{self.device} on BCM pin {self.pin} ({'on' if self.is_on else 'off'})"
