"""The graph passes newton_krylov's whole-loop graph runs under (deqlab/solvers/graph_passes.py), on small
traced graphs: what they take out of a loop body, and that the graph computes the same values after."""

import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch._higher_order_ops.while_loop import while_loop

from deqlab.solvers.graph_passes import drop_zero_products, hoist_invariants

F64 = torch.float64
linear = torch.nn.functional.linear


def _calls(gm, target):
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target is target)


def test_an_invariant_part_of_a_loop_body_is_computed_once_in_front_of_the_loop():
    """tanh(x W^T) depends only on the loop's closed-over inputs: it moves out, the product with the
    carried v stays, a view of W (W^T) stays inside (a view cannot be a loop input of its own)."""
    g = torch.Generator().manual_seed(0)
    x, W, v0 = (torch.randn(3, 6, dtype=F64, generator=g), torch.randn(6, 6, dtype=F64, generator=g),
                torch.randn(3, 6, dtype=F64, generator=g))

    def fn(x, W, v0):
        def body(i, v):
            return i + 1, torch.tanh(linear(x, W)) * v + 0.5 * linear(v, W)

        return while_loop(lambda i, v: i < 5, body, (torch.zeros((), dtype=torch.int64), v0))

    gm = make_fx(fn, tracing_mode="fake")(x, W, v0)
    body = gm.while_loop_body_graph_0
    mm, tanh = torch.ops.aten.mm.default, torch.ops.aten.tanh.default
    assert (_calls(body, mm), _calls(body, tanh), _calls(gm, mm)) == (2, 1, 0)
    expected = fn(x, W, v0)
    hoist_invariants(gm)
    assert (_calls(body, mm), _calls(body, tanh), _calls(gm, mm), _calls(gm, tanh)) == (1, 0, 1, 1)
    loop = next(n for n in gm.graph.nodes if n.target is torch.ops.higher_order.while_loop)
    assert len(loop.args[3]) == 3  # x, W and the hoisted tanh(x W^T); no view of W
    assert len(list(gm.while_loop_cond_graph_0.graph.find_nodes(op="placeholder"))) == 2 + 3
    for got, want in zip(gm(x, W, v0), expected):
        assert torch.equal(got, want)


def test_a_product_with_a_zero_tangent_is_dropped():
    """addmm(c, a, 0) is c: the zero tangent torch.func.jvp gives a closed-over weight."""
    g = torch.Generator().manual_seed(1)
    c, a = torch.randn(3, 4, dtype=F64, generator=g), torch.randn(3, 5, dtype=F64, generator=g)

    def fn(c, a):
        zero = torch.zeros((), dtype=F64).expand(5, 4)
        return torch.addmm(c, a, zero) * 2, torch.addmm(c, a, torch.ones(5, 4, dtype=F64))

    gm = make_fx(fn)(c, a)
    assert _calls(gm, torch.ops.aten.addmm.default) == 2
    drop_zero_products(gm)
    assert _calls(gm, torch.ops.aten.addmm.default) == 1  # the product with ones stays
    for got, want in zip(gm(c, a), fn(c, a)):
        assert torch.equal(got, want)
