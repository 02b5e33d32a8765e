"""deqlab vs TorchDEQ 0.1.0, side by side on one seeded layer f(z) = tanh(W z + U x + b).

    .venv/bin/python benchmarks/solvers.py [--quick] [--repeats N]

Needs the `bench` extra (torchdeq==0.1.0). Both libraries get the identical
float32 layer, z0 = 0, the relative stopping test ||f(z)-z|| / ||f(z)|| and
max_iter = 500. Everything reported is measured here, the same way for both:

- NFE: calls of f counted by a wrapper (TorchDEQ's `nstep` is the step at
  which its best iterate was found, not its number of evaluations; a JVP that
  deqlab's Newton-Krylov takes counts as one call, since it runs f once);
- residual: max over the batch of ||f(z)-z|| / ||f(z)|| of the z returned;
- err: max over the batch of ||z - z*|| / ||z*|| against a float64 Newton
  solution of the same (float32-valued) layer;
- conv: the residual computed here is <= tol (not the solver's own claim);
- time: median over repeats (round-robin over solvers, so machine noise hits
  every row alike), time.perf_counter, torch's default thread count;
- backward: loss L = sum(w * z*) for a fixed random w; time of loss.backward()
  alone; gradient error = ||g - g*|| / ||g*|| over (W, U, b), where g* solves
  (I - J^T) g = w per sample with torch.linalg.solve in float64. VJPs through
  f are counted by an identity autograd.Function inside the layer.

Cases: easy (Gaussian W, ||W||_2 = 0.9, Jacobian radius ~0.37 at z*) and hard
(symmetric Gaussian W, ||W||_2 = 0.99, x and b scaled by 0.1, radius ~0.97).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deqlab.layers import DEQ  # noqa: E402
from deqlab.solvers import solve  # noqa: E402

try:
    from importlib.metadata import version as _dist_version

    import torchdeq  # noqa: F401
    from torchdeq import get_deq
    from torchdeq.solver import get_solver as td_get_solver
    from torchdeq.solver import register_solver as td_register_solver
except ImportError:  # pragma: no cover - the bench extra is missing
    sys.exit("benchmarks/solvers.py needs TorchDEQ: pip install -e '.[bench]' (torchdeq==0.1.0)")

WIDTH, IN_DIM, BATCH = 256, 64, 128
MAX_ITER = 500
TOLS = (1e-4, 1e-6)
BWD_TOL = 1e-6
DTYPE = torch.float32
SLOW_S = 10.0  # a forward solve slower than this on its first run is timed once, not repeated
GOAL_NFE, GOAL_TIME, GOAL_BWD_TIME, GOAL_GRAD = 1.0, 0.8, 0.5, 1e-4


# --------------------------------------------------------------------------- layer
class CountVJP(torch.autograd.Function):
    """Identity whose backward counts one VJP through f."""

    counter = [0]

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        CountVJP.counter[0] += 1
        return g


class Cell(nn.Module):
    """f(z, x) = tanh(W z + U x + b); counts its forward calls."""

    def __init__(self, W, U, b):
        super().__init__()
        self.W = nn.Parameter(W.clone())
        self.U = nn.Parameter(U.clone())
        self.b = nn.Parameter(b.clone())
        self.calls = 0

    def forward(self, z, x):
        self.calls += 1
        out = torch.tanh(F.linear(z, self.W) + F.linear(x, self.U, self.b))
        return CountVJP.apply(out) if torch.is_grad_enabled() else out


@dataclass
class Case:
    name: str
    W: torch.Tensor  # float32 values; the float64 reference upcasts exactly these
    U: torch.Tensor
    b: torch.Tensor
    x: torch.Tensor
    w: torch.Tensor  # loss weights
    z_ref: torch.Tensor = None  # float64
    grad_ref: torch.Tensor = None  # float64, flattened (W, U, b)
    radius: float = float("nan")


def make_case(name: str) -> Case:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(WIDTH, WIDTH, generator=g, dtype=torch.float64)
    if name == "hard":
        W, norm, scale = (W + W.T) / 2, 0.99, 0.1
    else:
        norm, scale = 0.9, 1.0
    W = W * norm / torch.linalg.matrix_norm(W, 2)
    U = torch.randn(WIDTH, IN_DIM, generator=g, dtype=torch.float64) * (0.75 / IN_DIM**0.5)
    b = torch.randn(WIDTH, generator=g, dtype=torch.float64) * 0.5 * scale
    x = torch.randn(BATCH, IN_DIM, generator=g, dtype=torch.float64) * scale
    w = torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = Case(name, W.to(DTYPE), U.to(DTYPE), b.to(DTYPE), x.to(DTYPE), w.to(DTYPE))
    reference(c)
    return c


def reference(c: Case) -> None:
    """float64 fixed point by Newton with the exact Jacobian, and the exact implicit gradient."""
    # torch 2.13's CPU batched LU (MKL) returns wrong results or raises for n >= ~200 with more
    # than one thread (measured here: n = 200, 256 wrong at 2 threads, right at 1): solve on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _reference(c)
    finally:
        torch.set_num_threads(threads)


def _reference(c: Case) -> None:
    W, U, b, x = (t.double() for t in (c.W, c.U, c.b, c.x))
    inj = x @ U.T + b
    eye = torch.eye(WIDTH, dtype=torch.float64)
    z = torch.zeros(BATCH, WIDTH, dtype=torch.float64)
    for _ in range(100):
        fz = torch.tanh(z @ W.T + inj)
        res = float(((fz - z).norm(dim=1) / fz.norm(dim=1)).max())
        if res < 1e-14:
            break
        J = (1 - fz**2)[:, :, None] * W[None]
        z = z - torch.linalg.solve(eye - J, (z - fz).unsqueeze(2)).squeeze(2)
    else:
        raise RuntimeError(f"float64 reference did not converge (residual {res:.2e})")
    c.z_ref = z
    fz = torch.tanh(z @ W.T + inj)
    J = (1 - fz**2)[:, :, None] * W[None]
    c.radius = float(torch.linalg.eigvals(J).abs().max())
    gvec = torch.linalg.solve(eye - J.transpose(1, 2), c.w.double().unsqueeze(2)).squeeze(2)
    params = [p.clone().requires_grad_() for p in (W, U, b)]
    out = torch.tanh(z @ params[0].T + x @ params[1].T + params[2])
    grads = torch.autograd.grad(out, params, gvec)
    c.grad_ref = torch.cat([t.flatten() for t in grads])


def rel_residual(f: Callable, z: torch.Tensor) -> float:
    with torch.no_grad():
        fz = f(z)
        return float(((fz - z).flatten(1).norm(dim=1) / fz.flatten(1).norm(dim=1)).max())


def rel_error(z: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((z.double() - ref).norm(dim=1) / ref.norm(dim=1)).max())


# --------------------------------------------------------------------------- forward
@dataclass
class Row:
    lib: str
    solver: str
    run: Callable  # (f, z0, tol) -> (z, reported_nfe, reported_converged)
    nfe: int = 0
    reported: str = ""
    residual: float = math.nan
    err: float = math.nan
    times: list = field(default_factory=list)
    converged: bool = False
    note: str = ""
    single: bool = False

    @property
    def time(self) -> float:
        return statistics.median(self.times) if self.times else math.nan


def deqlab_run(name: str, **options):
    def run(f, z0, tol):
        res = solve(f, z0, solver=name, tol=tol, max_iter=MAX_ITER, stop_mode="rel", **options)
        note = res.stats.get("failure", "")
        return res.z, f"{res.nfe}", bool(res.converged.all()), note

    return run


def torchdeq_run(name: str, **kwargs):
    solver = td_get_solver(name)

    def run(f, z0, tol):
        with torch.no_grad():
            z, _, info = solver(f, z0, max_iter=MAX_ITER, tol=tol, stop_mode="rel", **kwargs)
        nstep = int(info["nstep"].max())
        return z, f"nstep {nstep}", bool(info["rel_lowest"].max() < tol), ""

    return run


def forward_rows() -> list[Row]:
    return [
        Row("deqlab", "fixed_point", deqlab_run("fixed_point")),
        Row("deqlab", "anderson", deqlab_run("anderson")),
        Row("deqlab", "broyden", deqlab_run("broyden")),
        Row("deqlab", "newton_krylov", deqlab_run("newton_krylov")),
        Row("deqlab", "continuous", deqlab_run("continuous")),
        Row("torchdeq", "fixed_point_iter", torchdeq_run("fixed_point_iter")),
        Row("torchdeq", "anderson", torchdeq_run("anderson")),
        Row("torchdeq", "anderson lam=1e-10", torchdeq_run("anderson", lam=1e-10)),
        Row("torchdeq", "broyden", torchdeq_run("broyden")),
    ]


def bench_forward(c: Case, tol: float, repeats: int) -> list[Row]:
    cell = Cell(c.W, c.U, c.b)
    x = c.x

    def f(z):
        return cell(z, x)

    z0 = torch.zeros(BATCH, WIDTH, dtype=DTYPE)
    rows = forward_rows()
    for row in rows:  # first run: counts and accuracy (also the warm-up)
        cell.calls = 0
        with torch.no_grad():
            t0 = time.perf_counter()
            z, reported, claimed, note = row.run(f, z0, tol)
            first = time.perf_counter() - t0
        if first > SLOW_S:  # too slow to repeat: its one (cold) run is its time
            row.times.append(first)
            row.single = True
        row.nfe = cell.calls
        row.reported = reported + (" ok" if claimed else " not-conv")
        row.residual = rel_residual(f, z)
        row.err = rel_error(z, c.z_ref)
        row.converged = math.isfinite(row.residual) and row.residual <= tol
        row.note = note
    for _ in range(repeats):  # round-robin, so noise is shared evenly
        for row in rows:
            if row.single:
                continue
            with torch.no_grad():
                t0 = time.perf_counter()
                row.run(f, z0, tol)
                row.times.append(time.perf_counter() - t0)
    return rows


def best(rows: list[Row]) -> Optional[Row]:
    ok = [r for r in rows if r.converged]
    return min(ok, key=lambda r: (r.nfe, r.time)) if ok else None


# --------------------------------------------------------------------------- backward
@dataclass
class BRow:
    lib: str
    mode: str
    make: Callable  # (cell) -> callable x -> z (differentiable)
    times: list = field(default_factory=list)
    grad_err: float = math.nan
    vjps: int = 0
    f_calls: int = 0
    fwd_nfe: int = 0
    note: str = ""
    implicit: bool = False
    single: bool = False

    @property
    def time(self) -> float:
        return statistics.median(self.times) if self.times else math.nan


def _counting_td_solver(base: str, **fixed):
    """A TorchDEQ solver registered under a new name (public register_solver), with fixed kwargs."""
    solver = td_get_solver(base)

    def run(func, x0, **kwargs):
        kwargs.update(fixed)
        return solver(func, x0, **kwargs)

    return run


td_register_solver("anderson_lam1e-10", _counting_td_solver("anderson", lam=1e-10))

TD_SOLVER_NAMES = {  # forward-table names -> (registered solver, solver kwargs)
    "fixed_point_iter": "fixed_point_iter",
    "anderson": "anderson",
    "anderson lam=1e-10": "anderson_lam1e-10",
    "broyden": "broyden",
}


def deqlab_bwd(fwd_solver: str, backward: str, tol: float, **bopts):
    def make(cell):
        deq = DEQ(cell, solver=fwd_solver, tol=tol, max_iter=MAX_ITER, backward=backward, backward_options=bopts,
                  z_shape=lambda x: (x.shape[0], WIDTH))

        def fwd(x):
            z, info = deq(x)
            return z, info

        return fwd

    return make


def torchdeq_bwd(fwd_solver: str, tol: float, ift: bool, b_solver: str = "fixed_point_iter", defaults: bool = False):
    """defaults=True keeps TorchDEQ's own backward settings (fixed_point_iter, b_max_iter 40, abs 1e-6)."""
    def make(cell):
        b_args = {} if defaults else {"b_solver": b_solver, "b_max_iter": MAX_ITER, "b_tol": tol, "b_stop_mode": "rel"}
        deq = get_deq(
            f_solver=TD_SOLVER_NAMES[fwd_solver], f_max_iter=MAX_ITER, f_tol=tol, f_stop_mode="rel", ift=ift, **b_args,
        )
        deq.train()

        def fwd(x):
            z_out, info = deq(lambda z: cell(z, x), torch.zeros(x.shape[0], WIDTH, dtype=x.dtype))
            return z_out[-1], info

        return fwd

    return make


def backward_rows(dl_fwd: str, td_fwd: str, tol: float) -> list[BRow]:
    rows = []
    seen = set()
    for adj in (dl_fwd, "anderson", "broyden", "newton_krylov", "fixed_point"):
        if adj in seen or adj == "continuous":
            continue
        seen.add(adj)
        label = f"implicit (adjoint {adj}{', = fwd' if adj == dl_fwd else ''})"
        opts = {} if adj == dl_fwd else {"solver": adj}
        rows.append(BRow("deqlab", label, deqlab_bwd(dl_fwd, "implicit", tol, **opts), implicit=True))
    # the adjoint is linear: one Newton step whose GMRES runs to the tolerance is plain GMRES
    gmres = {"solver": "newton_krylov", "solver_options": {"restart": 60, "max_restarts": 1, "inner_tol": tol / 4}}
    rows.append(BRow("deqlab", "implicit (adjoint GMRES: newton_krylov restart 60)",
                     deqlab_bwd(dl_fwd, "implicit", tol, **gmres), implicit=True))
    rows.append(BRow("deqlab", "phantom (default: 5 steps, damping 0.5)", deqlab_bwd(dl_fwd, "phantom", tol)))
    rows.append(BRow("torchdeq", "phantom (default: grad=1, tau=1)", torchdeq_bwd(td_fwd, tol, ift=False)))
    rows.append(BRow("torchdeq", "IFT (its defaults: fixed_point_iter, 40 iters, abs 1e-6)",
                     torchdeq_bwd(td_fwd, tol, ift=True, defaults=True), implicit=True))
    for b in ("fixed_point_iter", "anderson", "anderson_lam1e-10", "broyden"):
        label = f"IFT (b_solver {b}, rel {tol:g}, {MAX_ITER} iters)"
        rows.append(BRow("torchdeq", label, torchdeq_bwd(td_fwd, tol, ift=True, b_solver=b), implicit=True))
    return rows


def bench_backward(c: Case, dl_fwd: str, td_fwd: str, tol: float, repeats: int) -> list[BRow]:
    rows = backward_rows(dl_fwd, td_fwd, tol)
    cells = {}
    fwds = {}
    for row in rows:
        cell = Cell(c.W, c.U, c.b)
        cells[id(row)] = cell
        fwds[id(row)] = row.make(cell)
    w = c.w
    for rep in range(repeats + 1):  # rep 0: counts, gradient error, warm-up
        for row in rows:
            if rep > 0 and row.single:
                continue
            cell, fwd = cells[id(row)], fwds[id(row)]
            cell.zero_grad(set_to_none=True)
            cell.calls = 0
            z, info = fwd(c.x)
            fwd_calls = cell.calls
            loss = (w * z).sum()
            CountVJP.counter[0] = 0
            t0 = time.perf_counter()
            loss.backward()
            dt = time.perf_counter() - t0
            if rep == 0:
                row.fwd_nfe = fwd_calls
                row.vjps = CountVJP.counter[0]
                row.f_calls = cell.calls - fwd_calls
                g = torch.cat([p.grad.double().flatten() for p in (cell.W, cell.U, cell.b)])
                row.grad_err = float((g - c.grad_ref).norm() / c.grad_ref.norm())
                if row.lib == "deqlab" and row.implicit:
                    rec = info.backward
                    if rec.converged_frac is not None and rec.converged_frac < 1:
                        row.note = f"adjoint converged {rec.converged_frac:.0%}"
                if dt > SLOW_S:  # too slow to repeat: the first backward is its time
                    row.times.append(dt)
                    row.single = True
            else:
                row.times.append(dt)
    return rows


def best_backward(rows: list[BRow]) -> Optional[BRow]:
    imp = [r for r in rows if r.implicit]
    if not imp:
        return None
    ok = [r for r in imp if r.grad_err <= GOAL_GRAD]
    return min(ok, key=lambda r: r.time) if ok else min(imp, key=lambda r: r.grad_err)


# --------------------------------------------------------------------------- output
def fmt_ms(t: float, single: bool = False) -> str:
    return (f"{1e3 * t:.1f}" + ("*" if single else "")) if math.isfinite(t) else "-"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timing repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats (default 5, --quick 1)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)

    print(f"deqlab vs TorchDEQ {_dist_version('torchdeq')} | torch {torch.__version__} | threads {torch.get_num_threads()}"
          f" | width {WIDTH}, input {IN_DIM}, batch {BATCH}, {str(DTYPE).replace('torch.', '')}, z0 = 0,"
          f" stop_mode rel, max_iter {MAX_ITER}, {repeats} timed repeats (median)")
    t_start = time.perf_counter()
    cases = [make_case("easy"), make_case("hard")]
    for c in cases:
        print(f"case {c.name}: Jacobian spectral radius at z* = {c.radius:.3f} (max over batch)")

    fwd_results = {}
    for c in cases:
        for tol in TOLS:
            rows = bench_forward(c, tol, repeats)
            fwd_results[(c.name, tol)] = rows
            print(f"\n== forward | {c.name} | tol {tol:g}")
            print(f"{'lib':9} {'solver':20} {'NFE':>5} {'reported':>16} {'residual':>9} {'err fp64':>9} {'ms':>9} conv")
            for r in rows:
                print(f"{r.lib:9} {r.solver:20} {r.nfe:5d} {r.reported:>16} {r.residual:9.2e} {r.err:9.2e}"
                      f" {fmt_ms(r.time, r.single):>9} {'yes' if r.converged else 'NO'}"
                      + (f"  ({r.note})" if r.note else ""))

    bwd_results = {}
    for c in cases:
        rows = fwd_results[(c.name, BWD_TOL)]
        dl = best([r for r in rows if r.lib == "deqlab"])
        td = best([r for r in rows if r.lib == "torchdeq"])
        dl_name = dl.solver if dl else "anderson"
        td_name = td.solver if td else "anderson lam=1e-10"
        brows = bench_backward(c, dl_name, td_name, BWD_TOL, repeats)
        bwd_results[c.name] = (dl_name, td_name, brows)
        print(f"\n== backward | {c.name} | tol {BWD_TOL:g} (forward and adjoint) | forward: deqlab {dl_name},"
              f" torchdeq {td_name}")
        print(f"{'lib':9} {'mode':44} {'fwd NFE':>7} {'VJPs':>5} {'f in bwd':>8} {'grad err':>9} {'bwd ms':>9}")
        for r in brows:
            print(f"{r.lib:9} {r.mode:44} {r.fwd_nfe:7d} {r.vjps:5d} {r.f_calls:8d} {r.grad_err:9.2e} {fmt_ms(r.time):>9}"
                  + (f"  ({r.note})" if r.note else ""))

    # ratios and goals
    print("\n== deqlab / TorchDEQ (best converged solver each side: fewest NFE, ties by time)")
    summary = []
    for c in cases:
        for tol in TOLS:
            rows = fwd_results[(c.name, tol)]
            dl = best([r for r in rows if r.lib == "deqlab"])
            td = best([r for r in rows if r.lib == "torchdeq"])
            if dl is None or td is None:
                line = (f"{c.name:5} tol {tol:g}: deqlab {dl.solver if dl else 'none converged'},"
                        f" torchdeq {td.solver if td else 'none converged'}; ratio undefined")
                print(line)
                summary.append((c.name, tol, dl, td, math.nan, math.nan))
                continue
            nr, tr = dl.nfe / td.nfe, dl.time / td.time
            summary.append((c.name, tol, dl, td, nr, tr))
            print(f"{c.name:5} tol {tol:g}: deqlab {dl.solver} ({dl.nfe} NFE, {fmt_ms(dl.time)} ms) vs torchdeq"
                  f" {td.solver} ({td.nfe} NFE, {fmt_ms(td.time)} ms): NFE {nr:.2f}x [goal <= {GOAL_NFE}x:"
                  f" {verdict(nr <= GOAL_NFE)}], time {tr:.2f}x [goal <= {GOAL_TIME}x: {verdict(tr <= GOAL_TIME)}]")
    bsummary = []
    for c in cases:
        dl_name, td_name, brows = bwd_results[c.name]
        dl = best_backward([r for r in brows if r.lib == "deqlab"])
        td = best_backward([r for r in brows if r.lib == "torchdeq"])
        td_default = next(r for r in brows if r.lib == "torchdeq" and "its defaults" in r.mode)
        ratio = dl.time / td_default.time  # the goal is stated against TorchDEQ's default IFT backward
        ok = dl.grad_err <= GOAL_GRAD and ratio <= GOAL_BWD_TIME
        bsummary.append((c.name, dl, td_default, ratio, ok, td))
        print(f"{c.name:5} backward tol {BWD_TOL:g}: deqlab {dl.mode} ({fmt_ms(dl.time)} ms, grad err {dl.grad_err:.1e})"
              f" vs torchdeq {td_default.mode} ({fmt_ms(td_default.time)} ms, grad err {td_default.grad_err:.1e}):"
              f" time {ratio:.2f}x [goal err <= {GOAL_GRAD:g} and <= {GOAL_BWD_TIME}x: {verdict(ok)}];"
              f" vs torchdeq's best tuned IFT {td.mode} {dl.time / td.time:.2f}x (its grad err {td.grad_err:.1e})")

    # Markdown
    print("\n### Markdown\n")
    print(f"Layer tanh(W z + U x + b), width {WIDTH}, batch {BATCH}, float32, z0 = 0, relative tolerance,"
          f" max_iter {MAX_ITER}; NFE counted by a wrapper; time = median of {repeats} ({torch.get_num_threads()}"
          f" CPU threads). Residual and error are of the returned z; error vs a float64 Newton solution.\n")
    print("| case | tol | library | solver | NFE | residual | error vs fp64 | forward ms | converged |")
    print("|---|---|---|---|---:|---:|---:|---:|---|")
    for (cname, tol), rows in fwd_results.items():
        for r in rows:
            print(f"| {cname} | {tol:g} | {r.lib} | {r.solver} | {r.nfe} | {r.residual:.1e} | {r.err:.1e} |"
                  f" {fmt_ms(r.time, r.single)} | {'yes' if r.converged else 'no'} |")
    print(f"\nBackward, tol {BWD_TOL:g}, L = sum(w * z*); gradient error vs the exact implicit gradient (float64).\n")
    print("| case | library | mode | VJPs | f calls in backward | gradient error | backward ms |")
    print("|---|---|---|---:|---:|---:|---:|")
    for cname, (_, _, brows) in bwd_results.items():
        for r in brows:
            print(f"| {cname} | {r.lib} | {r.mode} | {r.vjps} | {r.f_calls} | {r.grad_err:.1e} | {fmt_ms(r.time, r.single)} |")
    print("\n| case | tol | deqlab best | TorchDEQ best | NFE ratio (goal <= 1.0) | time ratio (goal <= 0.8) |")
    print("|---|---|---|---|---:|---:|")
    for cname, tol, dl, td, nr, tr in summary:
        dls = f"{dl.solver} ({dl.nfe})" if dl else "none converged"
        tds = f"{td.solver} ({td.nfe})" if td else "none converged"
        nrs = f"{nr:.2f} {verdict(nr <= GOAL_NFE)}" if math.isfinite(nr) else "-"
        trs = f"{tr:.2f} {verdict(tr <= GOAL_TIME)}" if math.isfinite(tr) else "-"
        print(f"| {cname} | {tol:g} | {dls} | {tds} | {nrs} | {trs} |")
    print("\n| case | deqlab implicit (grad err) | TorchDEQ default IFT (grad err) | time ratio | goal (err <= 1e-4, <= 0.5x) |"
          " TorchDEQ best tuned IFT (grad err) | time ratio |")
    print("|---|---|---|---:|---|---|---:|")
    for cname, dl, td, ratio, ok, td_best in bsummary:
        print(f"| {cname} | {dl.mode} ({dl.grad_err:.1e}) | {td.mode} ({td.grad_err:.1e}) | {ratio:.2f} | {verdict(ok)} |"
              f" {td_best.mode} ({td_best.grad_err:.1e}) | {dl.time / td_best.time:.2f} |")
    print(f"\n`*`: timed once (its first run took over {SLOW_S:g} s). NFE ratio and time ratio: deqlab / TorchDEQ;"
          " TorchDEQ anderson and broyden are its own defaults (m=6, lam=1e-4; Broyden memory = max_iter).")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
