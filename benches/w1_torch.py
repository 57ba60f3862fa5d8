"""PyTorch peer for workload W1: the TWIN / TWIN-V2 online path (SPEC §3, shared/BENCHMARKS.md).

A measuring script beside the Rust/CUDA engine, not part of it. Per request (one user, B candidates):

  gather   k_l = P_K[item_l], q_b = P_Q[target_b] from precomputed projection tables [items, 128]
  bias     bias_{l,a} = sum_j beta[a,j] (cross_emb[j, cross_{l,j}] . w_c[a,j])      (J = 3, 8-dim)
  ln n     logn_l = ln(cluster size), sizes uniform in 1..20
  CP-GSU   g_{b,l} = q_b . k_l / (h sqrt(d_k)) + mean_a bias_{l,a} + logn_l  (the head mean of alpha),
           top-K with K = min(100, L) over the whole sequence
  ESU      per head a: softmax over the K finalists (f32) of q_{b,a} . k_{l,a} / sqrt(d_k) + bias + ln n,
           pooled P_V rows, then W_o [128, 128]
(the same math as shared/peer/torch_online.py's twin_online; like it, values are P_V rows only,
without SPEC §3.5's x_c W^vc cross term). The throughput shape "R=64,L=10000,B=256" runs 64
requests, each with its own sequence and candidates, as one batched call.

Rows (one JSON object per line, after a first "device ..." line unless --json): work "online",
peer "torch", mode eager | compile, dtype, shape "L=10000,B=512" or "R=64,L=10000,B=256", runs,
median / p10 / p90 ms (CUDA events on cuda, a synchronised perf_counter elsewhere), plus details.
A row that fails carries "error" and the script goes on; it always exits 0.

On the GPU machine:   python3 benches/w1_torch.py                       (all shapes, f16 and f32)
                      python3 benches/w1_torch.py --autotune --compile-budget-s 120
CPU smoke test:       python3 benches/w1_torch.py --device cpu --items 10000 --shapes 1000x8,2x500x4 --reps 3
"""
import argparse, json, math, platform, signal, statistics, time
import torch
try:
    import torch._dynamo  # noqa: F401 - torch.compile's frontend; absent on very old builds
except Exception:  # noqa: BLE001
    pass

HEADS, DK, J, DC, TOPK, CROSS_VOCAB = 4, 32, 3, 8, 100, 64
D = HEADS * DK
DEFAULT_SHAPES = "1000x512,10000x512,100000x512,10000x1,100000x64,64x10000x256"
DTYPES = {"f16": torch.float16, "f32": torch.float32}


def parse_shapes(text):
    """'LxB' or 'RxLxB' -> (R or None, L, B)."""
    out = []
    for s in (t.strip() for t in text.split(",") if t.strip()):
        p = [int(v) for v in s.lower().split("x")]
        if len(p) == 2:
            out.append((None, p[0], p[1]))
        elif len(p) == 3:
            out.append((p[0], p[1], p[2]))
        else:
            raise SystemExit(f"bad shape {s!r}: want LxB or RxLxB")
    return out


def shape_str(R, L, B):
    return f"L={L},B={B}" if R is None else f"R={R},L={L},B={B}"


def make_tables(n_items, dtype, dev, g):
    """Model-version state: projection tables and the small cross / output parameters."""
    def rnd(*s, scale=1.0):
        return (torch.randn(*s, device=dev, generator=g) * scale).to(dtype)
    return dict(kt=rnd(n_items, D), vt=rnd(n_items, D), qt=rnd(n_items, D),
                cross_emb=rnd(J, CROSS_VOCAB, DC), w_c=rnd(HEADS, J, DC, scale=0.1),
                beta=rnd(HEADS, J), w_o=rnd(D, D, scale=1 / math.sqrt(D)))


def make_request(n_items, R, L, B, dtype, dev, g):
    """R requests (R = 1 for a single one), each with its own sequence and candidates."""
    r = R or 1
    return dict(seq=torch.randint(0, n_items, (r, L), device=dev, generator=g),
                cross=torch.randint(0, CROSS_VOCAB, (r, L, J), device=dev, generator=g),
                size=torch.randint(1, 21, (r, L), device=dev, generator=g).to(dtype),
                cand=torch.randint(0, n_items, (r, B), device=dev, generator=g))


def twin_online(kt, vt, qt, cross_emb, w_c, beta, w_o, seq, cross, size, cand):
    """[R, L] sequences, [R, B] candidates -> [R, B, D]."""
    R, L = seq.shape
    B = cand.shape[1]
    K = min(TOPK, L)
    k = kt[seq]                                                          # [R, L, D]
    q = qt[cand]                                                         # [R, B, D]
    jj = torch.arange(J, device=seq.device)
    ce = cross_emb[jj, cross]                                            # [R, L, J, DC]
    bias = torch.einsum("rljc,hjc,hj->rlh", ce, w_c, beta)               # [R, L, H]
    logn = torch.log(size)                                               # [R, L]
    # CP-GSU: head-mean of the ESU logits over every behaviour, then top-K
    g = torch.bmm(q, k.transpose(1, 2)) / (HEADS * math.sqrt(DK))
    g = g + (bias.mean(-1) + logn)[:, None, :]                           # [R, B, L]
    top = torch.topk(g, K, dim=-1).indices.reshape(R, B * K)             # [R, B*K]
    # ESU over the finalists
    ids = torch.gather(seq, 1, top)                                      # [R, B*K]
    kk = kt[ids].view(R, B, K, HEADS, DK)
    vv = vt[ids].view(R, B, K, HEADS, DK)
    b_top = torch.gather(bias, 1, top[..., None].expand(-1, -1, HEADS)).view(R, B, K, HEADS)
    n_top = torch.gather(logn, 1, top).view(R, B, K)
    a = torch.einsum("rbhd,rbkhd->rbhk", q.view(R, B, HEADS, DK), kk) / math.sqrt(DK)
    a = a + b_top.permute(0, 1, 3, 2) + n_top[:, :, None, :]             # [R, B, H, K]
    p = torch.softmax(a.float(), dim=-1).to(vv.dtype)
    out = torch.einsum("rbhk,rbkhd->rbhd", p, vv).reshape(R, B, D)
    return out @ w_o


class CompileTimeout(BaseException):  # not Exception: torch must not swallow it
    pass


class alarm:
    """Raise CompileTimeout in the main thread after `seconds` (no-op where SIGALRM is missing)."""
    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        if hasattr(signal, "SIGALRM") and self.seconds > 0:
            def fire(*_):
                raise CompileTimeout()
            self.old = signal.signal(signal.SIGALRM, fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if hasattr(signal, "SIGALRM") and self.seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed_ms(fn, dev):
    if dev.type == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(dev)
        return s.elapsed_time(e)
    sync(dev); t0 = time.perf_counter(); fn(); sync(dev)
    return (time.perf_counter() - t0) * 1e3


def measure(fn, dev, reps, budget_s, warmup=5, first_timeout=0.0):
    """First call (compilation, for compile) under an optional alarm, up to warmup-1 more warm-up
    calls (cut at a quarter of the budget), then up to `reps` timed runs (cut at the budget, never
    fewer than 3). Returns the stats dict."""
    t0 = time.perf_counter()
    with alarm(first_timeout):
        out = fn(); sync(dev)
    first_ms = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    for _ in range(warmup - 1):
        if time.perf_counter() - t1 > budget_s / 4:
            break
        fn()
    sync(dev)
    ts, t2 = [], time.perf_counter()
    while len(ts) < reps and (len(ts) < 3 or time.perf_counter() - t2 < budget_s):
        ts.append(timed_ms(fn, dev))
    ts.sort()
    pct = lambda p: ts[min(len(ts) - 1, round(p * (len(ts) - 1)))]
    return out, dict(runs=len(ts), median_ms=round(statistics.median(ts), 5), p10_ms=round(pct(0.1), 5),
                     p90_ms=round(pct(0.9), 5), first_call_ms=round(first_ms, 3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="LxB or RxLxB (batched requests), comma-separated")
    ap.add_argument("--dtype", default="f16,f32")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--autotune", action="store_true", help='compile with mode="max-autotune-no-cudagraphs"')
    ap.add_argument("--compile-budget-s", type=float, default=60.0,
                    help="a shape whose compile+run exceeds this turns compile off for the remaining shapes")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=10.0, help="cap on the timed runs of one row (>= 3 runs)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tf32", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print only the JSON rows")
    args = ap.parse_args()

    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    shapes = parse_shapes(args.shapes)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or "cpu")
    if not args.json:
        print(f"device {dev_name} torch {torch.__version__} kind {dev.type} items {args.items} "
              f"tf32 {'on' if args.tf32 else 'off'}", flush=True)
    try:  # distinct shapes recompile; do not let dynamo fall back to eager silently
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    except Exception:  # noqa: BLE001
        pass
    cmode = "max-autotune-no-cudagraphs" if args.autotune else "default"
    compile_off = None                           # reason compile is skipped for the remaining shapes
    g = torch.Generator(device=dev); g.manual_seed(args.seed)

    for dname in (d.strip() for d in args.dtype.split(",") if d.strip()):
        dtype = DTYPES[dname]
        base = dict(work="online", peer="torch", device_kind=dev.type, device=dev_name, dtype=dname,
                    items=args.items, torch=torch.__version__)
        try:
            tables = make_tables(args.items, dtype, dev, g)
        except Exception as ex:  # noqa: BLE001 - e.g. out of memory
            for R, L, B in shapes:
                for m in modes:
                    print(json.dumps(dict(base, mode=m, shape=shape_str(R, L, B), error="tables: " + repr(ex)[:400])))
            continue
        for R, L, B in shapes:
            row0 = dict(base, shape=shape_str(R, L, B), L=L, B=B, R=R or 1, K=min(TOPK, L))
            try:
                req = make_request(args.items, R, L, B, dtype, dev, g)
            except Exception as ex:  # noqa: BLE001
                for m in modes:
                    print(json.dumps(dict(row0, mode=m, error="inputs: " + repr(ex)[:400])), flush=True)
                continue
            ref = None
            for m in modes:
                row = dict(row0, mode=m)
                if m == "compile":
                    row["compile_mode"] = cmode
                    if compile_off:
                        row["error"] = compile_off
                        print(json.dumps(row), flush=True)
                        continue
                t0 = time.perf_counter()
                try:
                    if m == "eager":
                        fn = twin_online
                    elif m == "compile":
                        torch._dynamo.reset()
                        fn = torch.compile(twin_online, dynamic=False,
                                           **({"mode": cmode} if args.autotune else {}))
                    else:
                        raise ValueError(f"unknown mode {m}")
                    out, st = measure(lambda: fn(**tables, **req), dev, args.reps, args.budget_s,
                                      first_timeout=args.compile_budget_s if m == "compile" else 0.0)
                    row.update(st)
                    if R:
                        row["requests_per_s"] = round(R / (st["median_ms"] / 1e3), 1)
                    if m == "eager":
                        ref = out
                    elif ref is not None:
                        row["max_abs_diff_vs_eager"] = float((out.float() - ref.float()).abs().max())
                except CompileTimeout:
                    row["error"] = f"torch.compile did not finish within {args.compile_budget_s:g} s"
                except Exception as ex:  # noqa: BLE001 - no C compiler, out of memory, ...
                    row["error"] = repr(ex)[:500]
                wall = time.perf_counter() - t0
                if m == "compile":
                    row["wall_s"] = round(wall, 2)
                    if "error" in row and "did not finish" in row["error"]:
                        compile_off = f"skipped: compile budget exceeded on {dname} {row['shape']}"
                    elif wall > args.compile_budget_s:
                        compile_off = (f"skipped: compile+run of {dname} {row['shape']} took {wall:.0f} s "
                                       f"> --compile-budget-s {args.compile_budget_s:g}")
                if "error" in row and dev.type == "cuda":
                    torch.cuda.empty_cache()
                print(json.dumps(row), flush=True)
            del req, ref
        del tables
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
