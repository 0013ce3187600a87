"""Q-DiT — automatic quantization granularity allocation and sample-wise dynamic activation
quantization (Chen et al., arXiv 2406.17343, CVPR 2025; public code github.com/Juanerx/Q-DiT
read for the search's settings, qlisten's code is its own).

* Sec. 3.3 "sample-wise dynamic activation quantization": activation scale and zero point
  are computed on the fly per sample, per timestep and per group of channels —
  :func:`qdit_config` sets ``a_mode="dynamic", a_granularity="group"`` (the mechanism lives in
  :class:`backend.quant.layers.ActQuantizer`).
* Sec. 3.2 "automatic quantization granularity allocation": DiT layers differ in how their
  weights and activations vary across input channels and quality is not monotone in group
  size, so an evolutionary search picks one group size per layer (weights and activations of
  a layer share it, as in the paper's code), under a budget — the paper's stand-in for the
  bit-ops budget is "mean group size >= 128". Fitness is the generated samples' FID (FAD for
  audio) in the paper; here any callable: the bench passes FID/FAD on the embedded
  embedding nets, and :func:`proxy_fitness` offers the denoiser's output error vs FP on
  captured calibration calls, thousands of times cheaper.
* Cheaper than the paper: every (layer, group size) is quantized once into a
  :class:`LayerBank` and candidate models are assembled by swapping prebuilt layers, so an
  evaluation costs only the fitness itself; fitness values are cached by genome; the search
  state (population, cache, RNG state) is a plain dict, so a search resumes where it stopped.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..apply import _replace, quantizable_layers, resolve_recipe
from ..capture import CapturedCalls, output_error
from ..config import LayerOverride, QuantConfig
from ..errors import QuantError
from ..layers import QuantLinear

PAPER_CHOICES = (32, 64, 128, 192, 288)


def qdit_config(base: QuantConfig, group_size: int = 128) -> QuantConfig:
    """Group-wise weights and sample-wise dynamic group activations (Q-DiT's recipe)."""
    changes: dict[str, Any] = {"w_granularity": "group", "w_group_size": group_size}
    if base.a_bits is not None:
        changes.update(a_mode="dynamic", a_granularity="group", a_group_size=group_size)
    return base.replace(**changes)


@dataclass(frozen=True)
class SearchConfig:
    """Evolutionary search settings (paper: population 50, 10 generations, top-10 parents,
    15 crossovers, 25 mutations with p = 0.1, mean group >= 128)."""

    choices: tuple[int, ...] = PAPER_CHOICES
    population: int = 16
    generations: int = 5
    parents: int = 5
    crossovers: int = 6
    mutations: int = 6
    mutation_prob: float = 0.1
    min_mean_group: float = 128.0
    seed: int = 0
    max_tries: int = 200

    def __post_init__(self) -> None:
        if self.population < 2 or self.parents < 1 or self.parents > self.population:
            raise QuantError("search needs population >= 2 and 1 <= parents <= population")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise QuantError("mutation_prob must be in [0, 1]")
        if self.generations < 1:
            raise QuantError("generations must be >= 1")


class LayerBank:
    """Every searchable Linear layer pre-quantized at each of its valid group sizes."""

    def __init__(self, denoiser: nn.Module, base: QuantConfig, choices: tuple[int, ...]) -> None:
        if base.a_bits is not None and base.a_mode != "dynamic":
            raise QuantError("the group-size search uses dynamic activations (Q-DiT); set a_mode='dynamic'")
        self.base = qdit_config(base)
        self.layers: list[str] = []
        self.options: dict[str, tuple[int, ...]] = {}
        self.modules: dict[tuple[str, int], QuantLinear] = {}
        for name, layer in quantizable_layers(denoiser, self.base).items():
            if not isinstance(layer, nn.Linear) or resolve_recipe(name, self.base)[0] is None:
                continue
            valid = tuple(g for g in choices if layer.in_features % g == 0)
            if not valid:
                continue
            self.layers.append(name)
            self.options[name] = valid
            for g in valid:
                cfg = self.base.replace(w_group_size=g, a_group_size=g)
                recipe, _ = resolve_recipe(name, cfg)
                self.modules[(name, g)] = QuantLinear.from_linear(name, layer, recipe, compute="fake")
        if not self.layers:
            raise QuantError(f"no Linear layer has an input width divisible by any of {choices}")
        self.skeleton = denoiser

    def assemble(self, genome: tuple[int, ...], into: nn.Module) -> nn.Module:
        """Put the bank's layers for ``genome`` into ``into`` (an FP copy), in place."""
        for name, g in zip(self.layers, genome):
            _replace(into, name, self.modules[(name, g)])
        return into

    def stored_bytes(self, genome: tuple[int, ...]) -> int:
        return sum(self.modules[(n, g)].stored_bytes() for n, g in zip(self.layers, genome))


@dataclass
class SearchState:
    """Everything needed to resume a search (JSON-able via :meth:`to_dict`)."""

    generation: int = 0
    population: list[tuple[int, ...]] = field(default_factory=list)
    cache: dict[tuple[int, ...], float] = field(default_factory=dict)
    rng_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "generation": self.generation, "population": [list(p) for p in self.population],
            "cache": [[list(k), v] for k, v in self.cache.items()], "rng_state": self.rng_state,
            "history": self.history, "evaluations": self.evaluations, "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SearchState:
        return cls(
            generation=d["generation"], population=[tuple(p) for p in d["population"]],
            cache={tuple(k): v for k, v in d["cache"]}, rng_state=d["rng_state"], history=d["history"],
            evaluations=d["evaluations"], seconds=d["seconds"],
        )


@dataclass
class SearchResult:
    """The best genome and the config that reproduces it."""

    layers: list[str]
    genome: tuple[int, ...]
    fitness: float
    config: QuantConfig
    stored_bytes: int
    state: SearchState

    def to_dict(self) -> dict:
        return {"layers": self.layers, "genome": list(self.genome), "fitness": self.fitness,
                "config": self.config.to_dict(), "stored_bytes": self.stored_bytes, "state": self.state.to_dict()}


def genome_config(base: QuantConfig, layers: list[str], genome: tuple[int, ...]) -> QuantConfig:
    """A QuantConfig whose overrides give each searched layer its group size."""
    cfg = qdit_config(base)
    ov = tuple(
        (name, LayerOverride(w_group_size=g, a_group_size=g, reason=f"Q-DiT search: group {g}"))
        for name, g in zip(layers, genome)
    )
    return cfg.replace(overrides=tuple(base.overrides) + ov)


def proxy_fitness(captured: CapturedCalls) -> Callable[[nn.Module], float]:
    """Denoiser relative output error vs FP on captured calls (lower is better)."""
    return lambda model: output_error(model, captured)


def evolutionary_search(
    denoiser: nn.Module,
    base: QuantConfig,
    fitness: Callable[[nn.Module], float],
    search: SearchConfig = SearchConfig(),
    *,
    state: SearchState | None = None,
    on_generation: Callable[[SearchState], None] | None = None,
    bank: LayerBank | None = None,
) -> SearchResult:
    """Q-DiT's evolutionary group-size search; lower fitness is better.

    ``state`` resumes an earlier search (same denoiser, base and search config);
    ``on_generation`` is called with the state after every generation (persist it there).
    """
    bank = bank or LayerBank(denoiser, base, search.choices)
    opts = [bank.options[n] for n in bank.layers]
    rng = np.random.default_rng(search.seed)
    st = state or SearchState()
    if st.rng_state is not None:
        rng.bit_generator.state = st.rng_state
    work = copy.deepcopy(denoiser)

    def valid(genome: tuple[int, ...]) -> bool:
        return float(np.mean(genome)) >= search.min_mean_group

    def random_genome() -> tuple[int, ...]:
        for _ in range(search.max_tries):
            g = tuple(int(rng.choice(o)) for o in opts)
            if valid(g):
                return g
        return uniform

    feasible = [g for g in sorted({c for o in opts for c in o}) if all(g in o for o in opts)]
    uniform = next((tuple([g] * len(opts)) for g in feasible if g >= search.min_mean_group),
                   tuple(max(o) for o in opts))
    if not valid(uniform):
        raise QuantError(f"no configuration reaches mean group size {search.min_mean_group}")

    def evaluate(genome: tuple[int, ...]) -> float:
        if genome not in st.cache:
            st.cache[genome] = float(fitness(bank.assemble(genome, work)))
            st.evaluations += 1
        return st.cache[genome]

    if not st.population:
        pop = [uniform]
        while len(pop) < search.population:
            pop.append(random_genome())
        st.population = pop
    while st.generation < search.generations:
        t0 = time.perf_counter()
        scored = sorted(st.population, key=evaluate)
        parents = scored[: search.parents]
        fits = [st.cache[g] for g in scored]
        st.history.append({"generation": st.generation, "best": fits[0], "mean": float(np.mean(fits)),
                           "best_genome": list(scored[0]), "evaluations": st.evaluations})
        children: list[tuple[int, ...]] = []
        for _ in range(search.crossovers):
            for _ in range(search.max_tries):
                a, b = (parents[i] for i in rng.choice(len(parents), 2, replace=len(parents) < 2))
                child = tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))
                if valid(child):
                    children.append(child)
                    break
        for _ in range(search.mutations):
            for _ in range(search.max_tries):
                p = parents[int(rng.integers(len(parents)))]
                child = tuple(int(rng.choice(o)) if rng.random() < search.mutation_prob else x
                              for x, o in zip(p, opts))
                if valid(child):
                    children.append(child)
                    break
        nxt = list(dict.fromkeys(parents + children))
        while len(nxt) < search.population:
            nxt.append(random_genome())
        st.population = nxt[: search.population]
        st.generation += 1
        st.rng_state = rng.bit_generator.state
        st.seconds += time.perf_counter() - t0
        if on_generation is not None:
            on_generation(st)
    best = min(st.population + list(st.cache), key=lambda g: st.cache.get(g, float("inf")))
    evaluate(best)
    return SearchResult(
        layers=list(bank.layers), genome=best, fitness=st.cache[best],
        config=genome_config(base, bank.layers, best), stored_bytes=bank.stored_bytes(best), state=st,
    )


def search_summary(result: SearchResult) -> dict[str, Any]:
    """Group sizes chosen, mean group size and search cost, for reports."""
    counts: dict[int, int] = {}
    for g in result.genome:
        counts[g] = counts.get(g, 0) + 1
    return {"mean_group": float(np.mean(result.genome)), "histogram": counts,
            "evaluations": result.state.evaluations, "seconds": result.state.seconds,
            "history": result.state.history}
