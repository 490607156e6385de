"""Cut points made of one or several tensors: the search behind `--max-cut-tensors`.

A split puts a set S of layers on the edge. S must be downward closed (every layer
feeding a layer of S is in S): the head computes S from the image alone. The
tensors that cross the cut, the frontier, are the outputs of S that a layer
outside S consumes; the wire carries all of them, so the cost of a cut is the sum
of their int8 bytes. A cut is valid when its frontier holds at most N tensors,
no layer outside S reads the model input (the tail never sees the image) and no
model output is computed on the edge unless everything is (k = K).

This is DADS's formulation (Hu et al., INFOCOM 2019: the DNN as a DAG, the split
as an s-t cut, its cost the data crossing it) with two differences. DADS solves
one min-cut for the current link and cost weights; here the search is exact per
edge-side layer count, so the scheduler can trade edge compute against wire bytes
at run time: for every k, among all valid cuts with k layers on the edge, the
offered one has the fewest wire bytes. And a bundle's splits must nest (each head
contains the previous one, so the cost model's layer-by-layer accounting stays
true): among the per-k optimal cuts the longest chain ordered by inclusion is
offered, which drops a k whose optimum does not nest with the others.

Search. Every valid S is the downward closure of its maximal layers, and each
maximal layer produces a frontier tensor, so S is the closure of an antichain of
at most N layers. Enumerating antichains of at most N layers is exhaustive and,
on backbones (chains of blocks), small. Pure Python on integer bitmasks; the
graph is abstract (see `Graph`), partition.py builds it from a Keras model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: antichains examined before the search gives up on wider cuts (a very wide graph)
MAX_ANTICHAINS = 400_000
#: optimal cuts kept per layer count when several tie (symmetric branches)
MAX_TIES = 64


@dataclass(frozen=True)
class Graph:
    """A DAG of layers in topological order 0..K-1 and the tensors between them.

    Tensor ids are ints; `sizes` gives each tensor's bytes on the wire (int8, batch 1).
    `sources` are the model input tensors, `sinks` the model output tensors.
    """

    node_inputs: tuple[tuple[int, ...], ...]
    node_outputs: tuple[tuple[int, ...], ...]
    sizes: dict[int, int]
    sources: frozenset[int]
    sinks: frozenset[int]

    @property
    def num_nodes(self) -> int:
        return len(self.node_inputs)


@dataclass(frozen=True)
class Cut:
    nodes: int  # bitmask of the edge-side layers
    frontier: tuple[int, ...]  # tensor ids crossing the cut, in production order
    wire_bytes: int

    @property
    def size(self) -> int:
        return bin(self.nodes).count("1")

    @property
    def last_node(self) -> int:
        return self.nodes.bit_length() - 1


class _Index:
    """What the search asks over and over, precomputed."""

    def __init__(self, g: Graph):
        self.g = g
        producer: dict[int, int] = {}
        for v, outs in enumerate(g.node_outputs):
            for t in outs:
                producer[t] = v
        self.consumers: dict[int, int] = {}  # tensor -> bitmask of consuming layers
        for v, ins in enumerate(g.node_inputs):
            for t in ins:
                self.consumers[t] = self.consumers.get(t, 0) | (1 << v)
        self.ancestors: list[int] = []  # layer -> bitmask of its strict ancestors
        for ins in g.node_inputs:
            mask = 0
            for t in ins:
                p = producer.get(t)
                if p is not None:
                    mask |= self.ancestors[p] | (1 << p)
            self.ancestors.append(mask)
        self.full = (1 << g.num_nodes) - 1
        self.source_readers = 0
        for t in g.sources:
            self.source_readers |= self.consumers.get(t, 0)

    def frontier(self, mask: int) -> tuple[int, ...] | None:
        """Tensors crossing the cut after `mask`, or None when the cut is not valid."""
        if mask == 0 or mask == self.full:
            return ()
        if self.source_readers & ~mask:
            return None  # a tail layer reads the image
        out: list[int] = []
        for v in range(self.g.num_nodes):
            if not mask >> v & 1:
                continue
            for t in self.g.node_outputs[v]:
                if t in self.g.sinks:
                    return None  # a model output on the edge, the tail would only pass it on
                if self.consumers.get(t, 0) & ~mask:
                    out.append(t)
        return tuple(out)

    def cut(self, mask: int, max_tensors: int) -> Cut | None:
        f = self.frontier(mask)
        if f is None or len(f) > max_tensors:
            return None
        return Cut(mask, f, sum(self.g.sizes[t] for t in f))


def is_downward_closed(g: Graph, mask: int) -> bool:
    idx = _Index(g)
    return all(not mask >> v & 1 or idx.ancestors[v] & ~mask == 0 for v in range(g.num_nodes))


def valid_cut(g: Graph, mask: int, max_tensors: int) -> Cut | None:
    """The cut for edge-side layer set `mask`, or None when it is not a valid cut (tests use this)."""
    if not is_downward_closed(g, mask):
        return None
    return _Index(g).cut(mask, max_tensors)


def valid_cuts(g: Graph, max_tensors: int) -> dict[int, Cut]:
    """Every valid cut with at most max_tensors tensors (plus k = 0 and k = K), by layer bitmask."""
    if max_tensors < 1:
        raise ValueError(f"max_tensors must be at least 1, not {max_tensors}")
    idx = _Index(g)
    found: dict[int, Cut] = {0: Cut(0, (), 0), idx.full: Cut(idx.full, (), 0)}
    examined = 0

    def extend(start: int, members: int, closure: int, depth: int) -> bool:
        nonlocal examined
        for v in range(start, g.num_nodes):
            if idx.ancestors[v] & members:
                continue  # v depends on a member: not an antichain
            examined += 1
            if examined > MAX_ANTICHAINS:
                return False
            mask = closure | idx.ancestors[v] | (1 << v)
            if mask not in found:
                c = idx.cut(mask, max_tensors)
                if c is not None:
                    found[mask] = c
            if depth + 1 < max_tensors and not extend(v + 1, members | (1 << v), mask, depth + 1):
                return False
        return True

    if not extend(0, 0, 0, 0):
        log.warning("cut search stopped after %d layer sets: the graph is too wide for %d-tensor cuts; "
                    "some cuts may be missing (lower --max-cut-tensors)", MAX_ANTICHAINS, max_tensors)
    return found


def offered_cuts(g: Graph, max_tensors: int) -> list[Cut]:
    """The chain of cuts to offer, k = 0 first and k = K last (see the module docstring)."""
    cuts = valid_cuts(g, max_tensors)
    best: dict[int, list[Cut]] = {}
    for c in cuts.values():
        kept = best.get(c.size)
        if kept is None or c.wire_bytes < kept[0].wire_bytes:
            best[c.size] = [c]
        elif c.wire_bytes == kept[0].wire_bytes and len(kept) < MAX_TIES:
            kept.append(c)
    # Longest chain by inclusion through the per-size optima, from k = 0 to k = K.
    ordered = sorted((c for size in sorted(best) for c in sorted(best[size], key=_tie_key)), key=lambda c: c.size)
    length: dict[int, int] = {}
    prev: dict[int, int | None] = {}
    for i, c in enumerate(ordered):
        length[i], prev[i] = 1, None
        for j in range(i):
            d = ordered[j]
            if d.size < c.size and d.nodes & ~c.nodes == 0 and length[j] + 1 > length[i]:
                length[i], prev[i] = length[j] + 1, j
    end: int | None = len(ordered) - 1  # k = K, the only cut of its size
    chain: list[Cut] = []
    while end is not None:
        chain.append(ordered[end])
        end = prev[end]
    chain.reverse()
    dropped = sorted(set(best) - {c.size for c in chain})
    if dropped:
        log.info("cuts with %s edge-side layers are optimal but do not nest with the others; not offered", dropped)
    return chain


def _tie_key(c: Cut) -> tuple[int, int]:
    """Among equally cheap cuts: fewer tensors first, then the earliest layers (deterministic)."""
    return len(c.frontier), c.nodes
