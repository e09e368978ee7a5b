"""Name -> component registries: every model, network, likelihood, prior and objective is
registered once, with the options dataclass that configures it.

A component module registers its entries when it is imported::

    @dataclass
    class GammaGaussianOptions(Options):
        name: str = "gaussian-gamma"
        gamma_init: float = 1.0

    @LIKELIHOODS.register("gaussian-gamma", GammaGaussianOptions, "one learned variance")
    class GammaGaussianLikelihood(GaussianLikelihood): ...

The options dataclass names the component (``name``) and holds exactly the keyword
arguments of its builder, so ``LIKELIHOODS.build(opts, decoder, event_shape)`` calls
``GammaGaussianLikelihood(decoder, event_shape, gamma_init=opts.gamma_init)``. Config
validation asks the registry, so a name and its options exist in one place only.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vaekit.errors import ConfigError


@dataclass
class Options:
    """Base of every component's options: ``name`` selects the registry entry."""

    name: str

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a bad value (subclasses check their fields)."""

    def kwargs(self) -> dict[str, Any]:
        """The builder's keyword arguments: every field but ``name``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "name"}

    def label(self) -> str:
        """``name`` with its options, for logs: e.g. ``iwae(k=5)``."""
        opts = ", ".join(f"{k}={v}" for k, v in self.kwargs().items())
        return f"{self.name}({opts})" if opts else self.name


@dataclass(frozen=True)
class Entry:
    """One registered component: its builder, options dataclass and a one-line description."""

    name: str
    build: Callable[..., Any]
    options: type[Options]
    description: str


class Registry:
    """``name -> Entry`` for one kind of component; ``modules`` register it on import."""

    def __init__(self, kind: str, modules: tuple[str, ...]) -> None:
        self.kind, self.modules = kind, modules
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    def register(self, name: str, options: type[Options],
                 description: str = "") -> Callable[[Any], Any]:
        """Decorator: register a class or builder function under ``name``."""
        if dataclasses.fields(options)[0].name != "name":
            raise TypeError(f"{options.__name__} must derive from vaekit.registry.Options")

        def add(build: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (build.__doc__ or "").strip().splitlines()[0]
            self._entries[name] = Entry(name, build, options, doc)
            return build

        return add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self.modules:
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str) -> Entry:
        """The entry of ``name``, or a one-line error that lists the valid names."""
        self._load()
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}",
                              f"use one of {', '.join(self._entries)}")
        return self._entries[name]

    def options(self, name: str, **values: Any) -> Options:
        """The options of ``name`` with its defaults, updated by ``values``."""
        return self.get(name).options(**values)

    def build(self, opts: Options, *args: Any) -> Any:
        """Call the builder of ``opts.name`` with ``args`` and the options as keywords."""
        return self.get(opts.name).build(*args, **opts.kwargs())


MODELS = Registry("model", ("vaekit.models.build",))
NETWORKS = Registry("network architecture", ("vaekit.nn.mlp", "vaekit.nn.conv"))
LIKELIHOODS = Registry("likelihood", ("vaekit.distributions.likelihoods",))
PRIORS = Registry("prior", ("vaekit.distributions.priors",))
OBJECTIVES = Registry("objective", ("vaekit.objectives.elbo", "vaekit.objectives.score"))
ALL = (MODELS, NETWORKS, LIKELIHOODS, PRIORS, OBJECTIVES)


def component(registry: Registry, default: str) -> Any:
    """A config field holding the options of one ``registry`` entry (``default`` first)."""
    return dataclasses.field(default_factory=lambda: registry.options(default),
                             metadata={"registry": registry})
