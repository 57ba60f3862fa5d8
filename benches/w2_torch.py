"""PyTorch peer for workload W2: offline clustering (SPEC §4, shared/BENCHMARKS.md).

A measuring script beside the Rust/CUDA engine, not part of it. Three rows of work, f32, dim 64:

  lloyd             Lloyd k-means, 20 iterations (no early stop), N random points, k = int(N**0.3),
                    centroids start at the first k points; an empty cluster keeps its centroid.
                    shape "N=1000000,k=63,dim=64,iters=20"
  cluster_one_user  TWIN-V2 Algorithm 1 for one group: a queue starts with all N points; pop V, emit
                    it if |V| < gamma = 20, else k-means with k = max(2, floor(|V|**0.3)) (k-means++
                    seeding, Lloyd until no assignment changes or 20 iterations) and push every
                    non-empty part; a split that leaves one part cuts V by position into chunks < gamma.
                    Parts are cut with one sort + split per node (not one mask per centroid).
                    shape "N=10000"; the row carries the cluster count.
  cluster_users     the same for a batch of users of N each, one user after another (the plain way
                    with PyTorch); shape "users=1000,N=10000". Time-boxed by --budget-s: when the
                    batch would take longer, fewer users run; the row says how many (users_done),
                    users_per_s is measured on those, and median_ms is the whole batch at that rate.

Rows (one JSON object per line, after a first "device ..." line unless --json): peer "torch",
mode "eager", work, dtype "f32", shape, runs, median / p10 / p90 ms (CUDA events on cuda, a
synchronised perf_counter elsewhere). A failed row carries "error"; the script always exits 0.

On the GPU machine:   python3 benches/w2_torch.py                   [--big: one user of 10^6 too]
CPU smoke test:       python3 benches/w2_torch.py --device cpu --lloyd-n 2000 --user-n 500 --users 3 --users-n 500 --reps 3
"""
import argparse, json, platform, statistics, time
import torch

DIM, GAMMA, ITERS = 64, 20, 20


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed_ms(fn, dev):
    if dev.type == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(dev)
        return s.elapsed_time(e)
    t0 = time.perf_counter(); fn()
    return (time.perf_counter() - t0) * 1e3


def stats(ts):
    ts = sorted(ts)
    pct = lambda p: ts[min(len(ts) - 1, round(p * (len(ts) - 1)))]
    return dict(runs=len(ts), median_ms=round(statistics.median(ts), 4), p10_ms=round(pct(0.1), 4),
                p90_ms=round(pct(0.9), 4))


def measure(fn, dev, reps, budget_s, warmup=5):
    """Up to `warmup` warm-up calls (at least one; cut at a quarter of the budget), then up to `reps`
    timed runs (cut at the budget, never fewer than 3)."""
    t0 = time.perf_counter()
    for i in range(warmup):
        fn(); sync(dev)
        if time.perf_counter() - t0 > budget_s / 4:
            break
    ts, out, t1 = [], {}, time.perf_counter()
    while len(ts) < reps and (len(ts) < 3 or time.perf_counter() - t1 < budget_s):
        ts.append(timed_ms(lambda: out.update(r=fn()), dev))
    return out.get("r"), stats(ts)


def assign(x, c):
    """Nearest centroid; |x|^2 is the same for every centroid of a point, so it is left out."""
    return torch.addmm((c * c).sum(1)[None, :], x, c.T, alpha=-2.0).argmin(1)


def lloyd(x, c, iters, until_stable):
    """Lloyd iterations from centroids c; returns the last assignment."""
    k, prev = c.shape[0], None
    for _ in range(iters):
        a = assign(x, c)
        if until_stable and prev is not None and torch.equal(a, prev):
            break                                          # one host sync per iteration, as stated
        s = torch.zeros_like(c).index_add_(0, a, x)
        n = torch.bincount(a, minlength=k)
        c = torch.where((n > 0)[:, None], s / n.clamp_min(1)[:, None].to(x.dtype), c)
        prev = a
    return a


def kmeans_pp(x, k, g):
    """k-means++ seeding: each next centroid drawn with probability proportional to D^2."""
    idx = torch.randint(0, x.shape[0], (1,), device=x.device, generator=g)
    cs = [x[idx]]
    d2 = ((x - cs[0]) ** 2).sum(1)
    for _ in range(k - 1):
        idx = torch.multinomial(d2 + 1e-12, 1, generator=g)      # stays on the device, no sync
        cs.append(x[idx])
        d2 = torch.minimum(d2, ((x - cs[-1]) ** 2).sum(1))
    return torch.cat(cs, 0)


def hier_cluster(x, g, gamma=GAMMA, iters=ITERS):
    """TWIN-V2 Algorithm 1 for one group: returns the clusters as index tensors."""
    out, queue = [], [torch.arange(x.shape[0], device=x.device)]
    while queue:
        v = queue.pop()
        m = v.numel()
        if m < gamma:
            out.append(v)
            continue
        k = max(2, int(m ** 0.3))
        xv = x[v]
        a = lloyd(xv, kmeans_pp(xv, k, g), iters, until_stable=True)
        counts = torch.bincount(a, minlength=k).tolist()           # host sync: the part sizes
        parts = [p for p in torch.split(v[torch.argsort(a, stable=True)], counts) if p.numel()]
        if len(parts) == 1:                                         # identical points: cut by position
            parts = list(torch.split(v, gamma - 1))
        queue.extend(parts)
    return out


def ints(text):
    return [int(float(s)) for s in text.split(",") if s.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", default="lloyd,one,users", help="any of lloyd, one, users")
    ap.add_argument("--lloyd-n", default="1000000,100000")
    ap.add_argument("--user-n", default="10000,100000", help="one user's N (--big adds 10^6)")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--users-n", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=20.0,
                    help="cap on the timed runs of one row (>= 3 runs); the whole user batch for 'users'")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tf32", type=int, default=0, help="TF32 distance GEMMs (off: plain f32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print only the JSON rows")
    args = ap.parse_args()

    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    what = {w.strip() for w in args.what.split(",")}
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or "cpu")
    if not args.json:
        print(f"device {dev_name} torch {torch.__version__} kind {dev.type} tf32 {'on' if args.tf32 else 'off'}",
              flush=True)
    g = torch.Generator(device=dev); g.manual_seed(args.seed)
    base = dict(peer="torch", mode="eager", device_kind=dev.type, device=dev_name, dtype="f32",
                dim=DIM, torch=torch.__version__, tf32=bool(args.tf32))

    def emit(row, body):
        try:
            body(row)
        except Exception as ex:  # noqa: BLE001 - out of memory, ...
            row["error"] = repr(ex)[:500]
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)

    if "lloyd" in what:
        for N in ints(args.lloyd_n):
            k = int(N ** 0.3)
            row = dict(base, work="lloyd", shape=f"N={N},k={k},dim={DIM},iters={ITERS}", N=N, k=k, iters=ITERS)

            def body(row, N=N, k=k):
                x = torch.randn(N, DIM, device=dev, generator=g)
                _, st = measure(lambda: lloyd(x, x[:k].clone(), ITERS, until_stable=False), dev,
                                args.reps, args.budget_s)
                row.update(st)
            emit(row, body)

    user_ns = ints(args.user_n) + ([1_000_000] if args.big else [])
    if "one" in what:
        for N in user_ns:
            row = dict(base, work="cluster_one_user", shape=f"N={N}", N=N, gamma=GAMMA, kmeans_iters_max=ITERS,
                       seeding="k-means++")

            def body(row, N=N):
                x = torch.randn(N, DIM, device=dev, generator=g)
                cl, st = measure(lambda: hier_cluster(x, g), dev, args.reps, args.budget_s)
                row.update(st)
                row["clusters"] = len(cl)
                row["max_cluster"] = max(c.numel() for c in cl)
                assert sum(c.numel() for c in cl) == N, "clusters do not cover the points"
            emit(row, body)

    if "users" in what:
        U, N = args.users, args.users_n
        row = dict(base, work="cluster_users", shape=f"users={U},N={N}", users=U, N=N, gamma=GAMMA,
                   kmeans_iters_max=ITERS, seeding="k-means++", how="one user after another")

        def body(row):
            hier_cluster(torch.randn(N, DIM, device=dev, generator=g), g)   # warm-up user, untimed
            sync(dev)
            ts, clusters, t0 = [], 0, time.perf_counter()
            for _ in range(U):
                if ts and time.perf_counter() - t0 > args.budget_s:
                    break
                x = torch.randn(N, DIM, device=dev, generator=g)
                out = {}
                ts.append(timed_ms(lambda: out.update(c=hier_cluster(x, g)), dev))
                clusters += len(out["c"])
            per = stats(ts)
            rate = len(ts) / (sum(ts) / 1e3)
            row.update(runs=len(ts), users_done=len(ts), users_per_s=round(rate, 2),
                       median_ms=round(U / rate * 1e3, 3), p10_ms=None, p90_ms=None,
                       per_user_median_ms=per["median_ms"], per_user_p10_ms=per["p10_ms"],
                       per_user_p90_ms=per["p90_ms"], clusters=clusters, wall_s=round(time.perf_counter() - t0, 2))
            if len(ts) < U:
                row["note"] = (f"time-boxed: {len(ts)} of {U} users in {args.budget_s:g} s; "
                               f"median_ms is the whole batch at the measured rate")
        emit(row, body)


if __name__ == "__main__":
    main()
