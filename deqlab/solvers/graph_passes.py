"""Two inductor graph passes for Newton-Krylov's whole-loop graph (`fused.newton_krylov_loop`).

Inductor's own simplifications do not reach the subgraphs of a `while_loop`, and
Newton-Krylov's graph spends most of its time in one: the Arnoldi loop, where
each product is a `torch.func.jvp` of f at the Newton iterate x. Traced that way
a JVP carries two costs eager forward-mode AD does not pay or that no loop can
avoid by itself:
- a zero tangent for every tensor f closes over (a weight W), so F.linear's
  tangent is `v W^T + z 0`: a [D, D] zero fill and a product with it per JVP
  (`drop_zero_products`);
- f's primal part at x (`x W^T + b` and what follows from it alone), which is the
  same for every product of a GMRES cycle but recomputed in each
  (`hoist_invariants` computes it once per loop entry, outside the loop).
Both leave every value the graph computes unchanged (a product with zero is the
addend, up to inf/nan in the other factor, which eager never multiplies; a hoisted
op computes what it computed inside).
"""

from __future__ import annotations

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

aten = torch.ops.aten


class NewtonKrylovPasses(CustomGraphPass):
    """Inductor's `post_grad_custom_pre_pass` for newton_krylov's graph: both passes, on every loop body."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        gm = graph.owning_module
        drop_zero_products(gm)
        hoist_invariants(gm)

    def uuid(self):
        return "deqlab.graph_passes.newton_krylov.4"


# --------------------------------------------------------------------------- zero tangents
def _zero(node) -> bool:
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    if node.target in (aten.expand.default, aten.permute.default, aten.t.default, aten.view.default):
        return _zero(node.args[0])
    return (node.target is aten.full.default and node.args[1] == 0) or node.target is aten.zeros.default


def drop_zero_products(gm: torch.fx.GraphModule) -> None:
    """`addmm(c, a, 0)` and `addmm(c, 0, b)` -> c, in gm and every subgraph (same shape and dtype only)."""
    changed = False
    for node in list(gm.graph.nodes):
        sub = getattr(gm, node.target, None) if node.op == "get_attr" else None
        if isinstance(sub, torch.fx.GraphModule):
            drop_zero_products(sub)
        elif (node.target is aten.addmm.default and not node.kwargs and len(node.args) == 3
              and (_zero(node.args[1]) or _zero(node.args[2]))):
            bias, val = node.args[0], node.meta.get("val")
            bias_val = bias.meta.get("val") if isinstance(bias, torch.fx.Node) else None
            if isinstance(val, torch.Tensor) and isinstance(bias_val, torch.Tensor) and \
                    bias_val.shape == val.shape and bias_val.dtype == val.dtype:
                node.replace_all_uses_with(bias)
                gm.graph.erase_node(node)
                changed = True
    if changed:
        gm.graph.eliminate_dead_code()
        gm.recompile()


# --------------------------------------------------------------------------- loop-invariant code motion
def hoist_invariants(gm: torch.fx.GraphModule) -> None:
    """Move the ops of each while_loop body that depend only on the loop's additional (not carried) inputs
    out in front of the loop, innermost loops first, so a nested invariant climbs as far as it can."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.higher_order.while_loop:
            cond, body = (getattr(gm, a.target) for a in node.args[:2])
            hoist_invariants(body)
            _hoist(gm, node, cond, body)


def _pure(node: torch.fx.Node) -> bool:
    target = node.target
    return (node.op == "call_function" and isinstance(target, torch._ops.OpOverload)
            and not target._schema.is_mutable and torch.Tag.nondeterministic_seeded not in target.tags
            and isinstance(node.meta.get("val"), torch.Tensor))


def _hoist(gm, loop, cond, body) -> None:
    if len(loop.args) != 4 or loop.kwargs:
        return
    carried, extra = loop.args[2], tuple(loop.args[3])
    placeholders = list(body.graph.find_nodes(op="placeholder"))
    outside = dict(zip(placeholders[len(carried):], extra))
    output = body.graph.output_node()
    hoisted: dict = {}  # an ordered set: the body nodes to compute outside, in topological order
    for node in body.graph.nodes:
        if (_pure(node) and node.all_input_nodes and output not in node.users
                and all(i in outside or i in hoisted for i in node.all_input_nodes)):
            hoisted[node] = None
    # a view cannot cross into the loop as an input of its own (inputs must not alias): one that the body
    # still uses is computed on both sides, and what it views crosses instead
    frontier, inside = [], set()

    def needed_inside(node):
        if not _is_view(node):
            if node not in frontier:
                frontier.append(node)
        elif node not in inside:
            inside.add(node)
            for i in node.all_input_nodes:
                if i in hoisted:
                    needed_inside(i)

    for node in hoisted:
        if any(u not in hoisted for u in node.users):
            needed_inside(node)
    if not frontier:
        return
    env = dict(outside)
    with gm.graph.inserting_before(loop):
        for node in hoisted:
            env[node] = gm.graph.node_copy(node, lambda a: env[a])
    last = placeholders[-1]
    for i, node in enumerate(frontier):
        for sub in (body, cond):
            anchor = last if sub is body else list(sub.graph.find_nodes(op="placeholder"))[-1]
            with sub.graph.inserting_after(anchor):
                ph = sub.graph.placeholder(f"hoisted_{len(extra) + i}")
            ph.meta["val"] = node.meta["val"]
            if sub is body:
                node.replace_all_uses_with(ph)
                last = ph
    for node in reversed(list(hoisted)):
        if node not in inside:
            body.graph.erase_node(node)
    loop.args = (*loop.args[:3], extra + tuple(env[n] for n in frontier))
    for sub in (body, cond, gm):
        sub.recompile()


def _is_view(node) -> bool:
    return any(r.alias_info is not None for r in node.target._schema.returns)
