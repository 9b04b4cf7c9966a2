"""``ForwarderSettings`` defaults to what the forwarder and the sink default to: a copy that drifted
would make ``add_sentinel_forwarder()`` behave unlike ``BufferingForwarder(AzureSentinelForwarder(...))``."""

from __future__ import annotations

import dataclasses
import inspect

from sentinel_forwarder import AzureSentinelForwarder, BackgroundForwarder, BufferingForwarder
from sentinel_forwarder._config.settings import ForwarderSettings

#: Settings whose value means something else than the parameter of the same name (a kind, not an object).
_NOT_THE_SAME = {"credential"}


def test_the_settings_default_to_the_forwarders_and_the_sinks_defaults() -> None:
    settings = {f.name: f.default for f in dataclasses.fields(ForwarderSettings)}
    compared = []
    for cls in (BufferingForwarder, AzureSentinelForwarder, BackgroundForwarder):
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if name in settings and name not in _NOT_THE_SAME and parameter.default is not parameter.empty:
                assert settings[name] == parameter.default, f"{cls.__name__}({name}=)"
                compared.append(name)
    assert len(compared) >= 18, compared
