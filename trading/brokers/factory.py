"""Builds the broker the settings ask for."""
from __future__ import annotations

from django.conf import settings

from trading.brokers.base import Broker
from trading.errors import ConfigError

# The demo market: realised vol well above the options' implied vol, so a long straddle scalps profitably.
DEMO_REALIZED_VOL = 0.80


def broker_from_settings() -> Broker:
    if settings.BIFROST_BROKER == "sim":
        from trading.brokers.sim import SimBroker
        from trading.sim.market import MarketConfig

        broker = SimBroker(config=MarketConfig(realized_vol=DEMO_REALIZED_VOL), seed=settings.BIFROST_SIM_SEED,
                           state_path=settings.BIFROST_SIM_STATE_PATH, tick_s=settings.BIFROST_SIM_TICK_S,
                           speed=settings.BIFROST_SIM_SPEED)
        broker.faults.apply(settings.BIFROST_SIM_FAULTS)
        return broker
    if settings.BIFROST_BROKER == "ib":
        from trading.brokers.ib import IBBroker

        return IBBroker(host=settings.IB_HOST, port=settings.IB_PORT, client_id=settings.IB_CLIENT_ID,
                        account=settings.IB_ACCOUNT, mode=settings.BIFROST_MODE,
                        live_confirm=settings.BIFROST_LIVE_CONFIRM, client_lib=settings.BIFROST_IB_CLIENT)
    raise ConfigError("BIFROST_BROKER", f"unknown broker {settings.BIFROST_BROKER!r}; expected sim or ib")
