"""PyTorch peer for workload W3: one training step of the TWIN / TWIN-V2 CTR model (SPEC §2, §3, §5).

A measuring script beside the Rust/CUDA engine, not part of it. The model is the one the engine trains:

  x_h(i)  = [item_emb[i] (64), author_emb[author[i]] (64), topic_emb[topic[i]] (8), dur_emb[dbucket[i]] (8)]
            (H = 144); item -> author / topic / duration bucket are fixed random maps.
  cross   = J = 3 features, vocabularies [10, 24, 40] stacked into one [74, 8] table;
            x_c(l) = concat_j cross_emb[row_{l,j}] (24).
  attn    = h = 4 heads, d_k = 32, D = 128: q = x_h(target) W_q, k_l = x_h(l) W_k,
            v_l = x_h(l) W_v + x_c(l) W_vc, bias_{l,a} = sum_j beta[a,j] (cross_emb[row_{l,j}] . w_c[a,j]),
            alpha_{l,a} = q_a . k_{l,a} / sqrt(32) + bias_{l,a} + ln n_l   (ln n = 0 for raw TWIN).
  long    = GSU under no_grad: g_l = mean_a alpha_{l,a} over the whole padded [B, L] sequence, top-K
            (K = min(100, L)) with torch.topk; ESU: gather the K finalists, per-head softmax of alpha,
            pooled values, W_o [128, 128].
  short   = the same attention (same parameters) over the 50 most recent behaviours, no GSU, no ln n.
  head    = MLP 256-128-64-1 (ReLU) on [context_emb[hour] (8), x_h(target), long, short] (408),
            mean BCE-with-logits.
  optim   = Adam (lr 1e-3) on dense parameters, Adagrad (lr 0.05) on the sparse-gradient item and
            author tables (nn.Embedding(sparse=True)); small tables are dense.

Everything is f32 (TF32 matmuls on unless --tf32 0; the row says which). Random data: labels
Bernoulli(0.5), random item ids and cross buckets, equal lengths (the mask is still applied).
`--variant twin-v2`: the long sequence is L * --cluster-frac clusters with ln n, n uniform in 1..19.
`--gsu full` (default) projects every behaviour with W_k as a plain implementation does;
`--gsu folded` folds the query into W_k (x . sum_a W_k,a q_a), the same scores with less work.

On the GPU machine:   python3 benches/w3_torch.py --L 1000,10000   [--variant twin-v2] [--compile]
CPU smoke test:       python3 benches/w3_torch.py --device cpu --L 200 --batch 32 --items 10000 --steps 3 --warmup 1
Prints the card's copy bandwidth and f32 GEMM rate (not with --json), then one JSON row per shape:
median / p10 / p90 step ms (CUDA events), samples/s = B / median, peak memory, bytes and flops of
the work, the floor and the ratio to it. Rows also carry the fields scripts/gpu-report.py reads:
work "train", peer "torch", mode, device_kind, dtype, shape "B=512,L=1000" (L before clustering for
twin-v2), variant, runs. --budget-s caps one row's timed steps (never fewer than 3; runs says how many).
"""
import argparse, json, math, platform, resource, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DK, J, DC = 4, 32, 3, 8
D = HEADS * DK
ID_DIM, SMALL = 64, 8
H = 2 * ID_DIM + 2 * SMALL                      # 144
CROSS_VOCAB = (10, 24, 40)                      # stacked into 74 rows
N_TOPICS, N_DUR, N_HOURS = 64, 24, 24
TOPK, SHORT = 100, 50
MLP = (256, 128, 64)
Z = SMALL + H + 2 * D                           # 408


class TwinCTR(nn.Module):
    def __init__(self, n_items, n_authors, gsu):
        super().__init__()
        self.gsu = gsu
        self.item = nn.Embedding(n_items, ID_DIM, sparse=True)
        self.author = nn.Embedding(n_authors, ID_DIM, sparse=True)
        self.topic, self.dur = nn.Embedding(N_TOPICS, SMALL), nn.Embedding(N_DUR, SMALL)
        self.ctx, self.cross = nn.Embedding(N_HOURS, SMALL), nn.Embedding(sum(CROSS_VOCAB), DC)
        for e in (self.item, self.author, self.topic, self.dur, self.ctx, self.cross):
            nn.init.normal_(e.weight, std=0.05)
        self.register_buffer("i_author", torch.randint(0, n_authors, (n_items,)))
        self.register_buffer("i_topic", torch.randint(0, N_TOPICS, (n_items,)))
        self.register_buffer("i_dur", torch.randint(0, N_DUR, (n_items,)))
        self.register_buffer("row_j", torch.repeat_interleave(torch.arange(J), torch.tensor(CROSS_VOCAB)))
        self.wq, self.wk, self.wv = (nn.Linear(H, D, bias=False) for _ in range(3))
        self.wvc = nn.Linear(J * DC, D, bias=False)
        self.wo = nn.Linear(D, D, bias=False)
        self.w_c = nn.Parameter(torch.randn(HEADS, J, DC) * 0.1)
        self.beta = nn.Parameter(torch.ones(HEADS, J))
        dims, layers = (Z,) + MLP, []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-1], 1))

    def xh(self, ids):                           # [...] -> [..., 144]
        return torch.cat((self.item(ids), self.author(self.i_author[ids]),
                          self.topic(self.i_topic[ids]), self.dur(self.i_dur[ids])), -1)

    def bias_table(self):                        # [74, h]: beta[a, j(r)] * (cross_emb[r] . w_c[a, j(r)])
        wc = self.w_c[:, self.row_j]                                         # [h, 74, 8]
        return torch.einsum("rc,hrc->rh", self.cross.weight, wc) * self.beta[:, self.row_j].T

    @torch.no_grad()
    def gsu_topk(self, q, seq, rows, logn, mask, tbl):
        B, L = seq.shape
        x = self.xh(seq)                                                     # [B, L, H], whole sequence
        qh = q.view(B, HEADS, DK)
        if self.gsu == "folded":                 # mean_a q_a . (x W_k,a) = x . (sum_a W_k,a^T q_a) / h
            qf = torch.einsum("bad,adh->bh", qh, self.wk.weight.view(HEADS, DK, H))
            g = torch.bmm(x, qf[:, :, None]).squeeze(-1)
        else:
            g = torch.einsum("bad,blad->bl", qh, self.wk(x).view(B, L, HEADS, DK))
        g = g / (HEADS * math.sqrt(DK)) + tbl.mean(1)[rows].sum(-1)
        if logn is not None:
            g = g + logn
        if mask is not None:
            g = g.masked_fill(~mask, float("-inf"))
        return torch.topk(g, min(TOPK, L), dim=1).indices                    # [B, K]

    def attend(self, q, seq, rows, logn, mask, tbl, use_gsu):
        B = seq.shape[0]
        if use_gsu:                               # gather the K finalists; ESU below has gradients
            top = self.gsu_topk(q, seq, rows, logn, mask, tbl)
            seq, rows = seq.gather(1, top), rows.gather(1, top[..., None].expand(-1, -1, J))
            logn = None if logn is None else logn.gather(1, top)
            mask = None if mask is None else mask.gather(1, top)
        x = self.xh(seq)                                                     # [B, K, H]
        k = self.wk(x).view(B, -1, HEADS, DK)
        v = (self.wv(x) + self.wvc(self.cross(rows).flatten(2))).view(B, -1, HEADS, DK)
        a = torch.einsum("bad,bkad->bka", q.view(B, HEADS, DK), k) / math.sqrt(DK) + tbl[rows].sum(2)
        if logn is not None:
            a = a + logn[..., None]
        if mask is not None:
            a = a.masked_fill(~mask[..., None], float("-inf"))
        p = torch.softmax(a, dim=1)                                          # per head, over finalists
        return self.wo(torch.einsum("bka,bkad->bad", p, v).reshape(B, D))

    def forward(self, tgt, hour, seq, rows, logn, mask, sseq, srows):
        xt = self.xh(tgt)
        q, tbl = self.wq(xt), self.bias_table()
        long = self.attend(q, seq, rows, logn, mask, tbl, True)
        short = self.attend(q, sseq, srows, None, None, tbl, False)
        return self.mlp(torch.cat((self.ctx(hour), xt, long, short), -1)).squeeze(-1)


def make_batch(B, L, n_items, v2, dev):
    off = torch.tensor((0,) + CROSS_VOCAB[:-1], device=dev).cumsum(0)      # [0, 10, 34]

    def cross_rows(n):
        return torch.stack([torch.randint(0, c, (B, n), device=dev) for c in CROSS_VOCAB], -1) + off
    batch = dict(tgt=torch.randint(0, n_items, (B,), device=dev),
                 hour=torch.randint(0, N_HOURS, (B,), device=dev),
                 seq=torch.randint(0, n_items, (B, L), device=dev), rows=cross_rows(L),
                 logn=torch.randint(1, 20, (B, L), device=dev).float().log() if v2 else None,
                 mask=torch.ones(B, L, dtype=torch.bool, device=dev),
                 sseq=torch.randint(0, n_items, (B, SHORT), device=dev), srows=cross_rows(SHORT))
    return batch, torch.bernoulli(torch.full((B,), 0.5, device=dev))


def timed_ms(fn, dev):
    if dev.type == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        return s.elapsed_time(e)
    t0 = time.perf_counter(); fn()
    return (time.perf_counter() - t0) * 1e3


def ceilings(dev):
    """Device copy bandwidth (bytes/s) and f32 GEMM rate (flop/s, TF32 per the current flag)."""
    n, m = ((1 << 28), 8192) if dev.type == "cuda" else ((1 << 24), 1024)
    x = torch.empty(n, dtype=torch.float32, device=dev); y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    bw = 2 * n * 4 / (statistics.median(timed_ms(lambda: y.copy_(x), dev) for _ in range(10)) / 1e3)
    a = torch.randn(m, m, device=dev); b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    tf = 2 * m ** 3 / (statistics.median(timed_ms(lambda: a @ b, dev) for _ in range(10)) / 1e3)
    return bw, tf


def work(B, L, K, n_items, n_authors, v2):
    """Bytes and flops a step cannot avoid (rough lower bound). Bytes: the sequence inputs once (int32
    id, int8 cross buckets, f32 ln n), one projected f32 key row gathered per behaviour for the GSU,
    every distinct item / author row read in the forward plus its Adagrad update (grad, state r+w,
    weight r+w). Flops: the key projection once per distinct item and the score per behaviour for
    the GSU (forward only); 3x the forward (fwd + bwd) of the ESU over K + 50 rows (k, v, cross-v
    projections, q.k, p.v), the query, W_o twice and the MLP."""
    U = n_items * -math.expm1(-B * (L + SHORT + 1) / n_items)                  # expected distinct items
    Ua = n_authors * -math.expm1(-U / n_authors)
    byts = B * L * (4 + J + 4 * v2 + D * 4) + (U + Ua) * ID_DIM * 4 * 6
    per_row = 2 * (2 * H * D + J * DC * D + 2 * D)
    mlp = 2 * sum(a * b for a, b in zip((Z,) + MLP, MLP + (1,)))
    flops = 2 * U * H * D + 2 * B * L * D + 3 * B * ((K + SHORT) * per_row + 2 * H * D + 4 * D * D + mlp)
    return byts, flops


def measure(args, dev, L, model, fwd, opts, bw, tf):
    v2 = args.variant == "twin-v2"
    Lseq = max(1, round(L * args.cluster_frac)) if v2 else L
    B, K = args.batch, min(TOPK, Lseq)
    batches = [make_batch(B, Lseq, args.items, v2, dev) for _ in range(2)]
    state = {}

    def step(i):
        batch, y = batches[i % len(batches)]
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(fwd(**batch), y)
        loss.backward()
        for o in opts:
            o.step()
        state["loss"] = loss
    if dev.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    ts, t0 = [], time.perf_counter()
    while len(ts) < args.steps and (len(ts) < 3 or time.perf_counter() - t0 < args.budget_s):
        ts.append(timed_ms(lambda: step(len(ts)), dev))
    ts.sort()
    med = statistics.median(ts)
    pct = lambda p: ts[min(len(ts) - 1, round(p * (len(ts) - 1)))]
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    byts, flops = work(B, Lseq, K, args.items, args.authors, v2)
    floor_ms = max(byts / bw, flops / tf) * 1e3
    return dict(common(args, dev, L), runs=len(ts), op="w3_train_step", gsu=args.gsu, L=L, L_seq=Lseq,
                K=K, B=B, short=SHORT, items=args.items,
                tf32=bool(args.tf32), median_ms=round(med, 4), p10_ms=round(pct(0.1), 4),
                p90_ms=round(pct(0.9), 4), samples_per_s=round(B / (med / 1e3), 1), steps=len(ts),
                loss=round(float(state["loss"]), 5), peak_mem_gb=round(peak / 2**30, 3),
                peak_mem_kind="cuda allocated" if dev.type == "cuda" else "host max RSS",
                bytes=int(byts), flops=int(flops), floor_ms=round(floor_ms, 4),
                ratio_to_floor=round(med / floor_ms, 2), device=args.device_name, torch=torch.__version__)


def common(args, dev, L):
    """The row fields every peer script shares (scripts/gpu-report.py keys on work, dtype, shape)."""
    return dict(work="train", peer="torch", mode="compile" if args.compile else "eager",
                device_kind=dev.type, device=args.device_name, dtype="f32", shape=f"B={args.batch},L={L}",
                variant=args.variant)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", default="1000,10000", help="lifelong lengths (behaviours), comma-separated")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--authors", type=int, default=100_000)
    ap.add_argument("--variant", choices=("twin", "twin-v2"), default="twin")
    ap.add_argument("--cluster-frac", type=float, default=0.1, help="twin-v2: clusters per behaviour")
    ap.add_argument("--gsu", choices=("full", "folded"), default="full")
    ap.add_argument("--compile", action="store_true", help="wrap the model's forward in torch.compile")
    ap.add_argument("--tf32", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=60.0, help="cap on one row's timed steps (>= 3 steps)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", action="store_true", help="print only the JSON rows (no device line)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    torch.manual_seed(0)
    args.device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or "cpu")
    bw, tf = ceilings(dev)
    if not args.json:
        print(f"device {args.device_name} copy {bw/1e12:.3f} TB/s  f32 gemm (tf32 {'on' if args.tf32 else 'off'}) "
              f"{tf/1e12:.1f} TFLOP/s  torch {torch.__version__}", flush=True)
    model = TwinCTR(args.items, args.authors, args.gsu).to(dev)
    sparse = [model.item.weight, model.author.weight]
    dense = [p for n, p in model.named_parameters() if n not in ("item.weight", "author.weight")]
    opts = [torch.optim.Adam(dense, lr=1e-3, **({"fused": True} if dev.type == "cuda" else {})),
            torch.optim.Adagrad(sparse, lr=0.05, foreach=False)]
    fwd = model
    if args.compile:
        try:
            fwd = torch.compile(model, dynamic=False)
        except Exception as ex:  # noqa: BLE001 - report, do not hide
            for L in (int(s) for s in args.L.split(",") if s.strip()):
                print(json.dumps(dict(common(args, dev, L), op="w3_train_step", error=repr(ex)[:500])), flush=True)
            return
    for L in (int(s) for s in args.L.split(",") if s.strip()):
        try:
            r = measure(args, dev, L, model, fwd, opts, bw, tf)
        except Exception as ex:  # noqa: BLE001 - e.g. compile of sparse embeddings, or out of memory
            r = dict(common(args, dev, L), op="w3_train_step", gsu=args.gsu, L=L, B=args.batch,
                     torch=torch.__version__, error=repr(ex)[:500])
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
