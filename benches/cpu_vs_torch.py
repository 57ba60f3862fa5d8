"""Side by side on the CPU: `twin bench --backend cpu` (the fast path) against the project's
PyTorch eager peers of W1, W2 and W3 (benches/w{1,2,3}_torch.py), on the same cores, in one run,
workload by workload and in alternating rounds (ours, then torch, then ours again ...), so that a
machine whose load changes during the run hurts both sides alike. Prints the ratios against
issue 14's targets and writes every row to --out (JSON).

Not for CI (PyTorch is 5 GB). Install the peer once, outside the repository:
    python3 -m pip install --target /opt/torch torch
    PYTHONPATH=/opt/torch python3 benches/cpu_vs_torch.py            (about 15 minutes on 2 cores)
    PYTHONPATH=/opt/torch python3 benches/cpu_vs_torch.py --quick    (small shapes, a smoke test)

Each side's figure is the lowest of its rounds' medians (the least disturbed round); the JSON
keeps every round. Targets (issue 14): 2x on every W1 shape (f32; and our f16 faster than our
f32), 2x on Lloyd, 3x on one user's clustering, 1.5x on the W3 step (against the faster of the
peer's plain and folded GSU).
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json_lines(cmd, timeout):
    """Rows printed one JSON object per line by a torch peer."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    rows = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if not rows:
        sys.stderr.write(f"no rows from {' '.join(cmd)}:\n{out.stderr[-2000:]}\n")
    return rows


def run_twin(twin, args, timeout):
    out = subprocess.run([twin, "bench", *args, "--backend", "cpu", "--json"], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        sys.stderr.write(f"twin bench {' '.join(args)} failed:\n{out.stderr[-2000:]}\n")
        return []
    return json.loads(out.stdout)["rows"]


def plan(quick):
    """Per workload: our bench arguments, the peers' command lines, and how rows pair up."""
    items = "20000" if quick else "1000000"
    w1 = "1000x64,3000x8,3000x1" if quick else "1000x512,10000x64,10000x1,100000x1"
    reps = "5" if quick else "20"
    lloyd, users = ("20000", "2000,5000") if quick else ("100000", "10000,100000")
    w3L, w3B = ("200", "64") if quick else ("1000", "512")
    py = sys.executable
    return [
        dict(
            name="W1 online",
            ours=["online", "--shapes", w1, "--dtype", "f32,f16", "--items", items, "--reps", reps, "--budget-s", "10"],
            peers=[[py, f"{HERE}/w1_torch.py", "--device", "cpu", "--modes", "eager", "--dtype", "f32", "--shapes", w1,
                    "--items", items, "--reps", reps, "--budget-s", "10", "--json"]],
        ),
        dict(
            name="W2 cluster",
            ours=["cluster", "--shapes", ",".join([f"lloyd:{lloyd}"] + [f"user:{n}" for n in users.split(",")]),
                  "--reps", "5" if quick else "10", "--budget-s", "30"],
            peers=[[py, f"{HERE}/w2_torch.py", "--device", "cpu", "--what", "lloyd,one", "--lloyd-n", lloyd,
                    "--user-n", users, "--reps", "5" if quick else "10", "--budget-s", "30", "--json"]],
        ),
        dict(
            name="W3 train",
            ours=["train", "--shapes", f"{w3B}x{w3L}", "--items", items, "--reps", "5", "--budget-s", "30"],
            peers=[[py, f"{HERE}/w3_torch.py", "--device", "cpu", "--L", w3L, "--batch", w3B, "--items", items,
                    "--gsu", g, "--steps", "5", "--warmup", "2", "--budget-s", "30", "--json"] for g in ("full", "folded")],
        ),
    ]


def key_ours(r):
    work = {"online": "online", "lloyd": "lloyd", "cluster_one_user": "one_user", "train": "train"}.get(r["work"])
    if work is None or (work == "train" and r.get("version") != "twin"):
        return None
    return (work, r["shape"], r["dtype"] if work == "online" else "f32")


def key_peer(r):
    work = {"online": "online", "lloyd": "lloyd", "cluster_one_user": "one_user", "train": "train"}.get(r.get("work"))
    if work is None or "median_ms" not in r or (work == "train" and r.get("variant", "twin") != "twin"):
        return None
    tag = f"gsu={r['gsu']}" if work == "train" else "eager"
    return (work, r["shape"], "f32"), tag


TARGET = {"online": 2.0, "lloyd": 2.0, "one_user": 3.0, "train": 1.5}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--twin", default=os.path.join(HERE, "..", "target", "release", "twin"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated workload names to run (W1, W2, W3)")
    ap.add_argument("--out", default="cpu_vs_torch.json")
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("PyTorch is not importable: install it with `pip install --target DIR torch` and set PYTHONPATH=DIR")
    ours, peers, log = {}, {}, []
    t0 = time.time()
    for w in plan(args.quick):
        if args.only and not any(w["name"].startswith(o) for o in args.only.split(",")):
            continue
        for rnd in range(args.rounds):
            for r in run_twin(args.twin, w["ours"], 3600):
                k = key_ours(r)
                log.append(dict(side="ours", round=rnd, **r))
                if k:
                    ours[k] = min(ours.get(k, float("inf")), r["median_ms"])
            for cmd in w["peers"]:
                for r in run_json_lines(cmd, 3600):
                    log.append(dict(side="torch", round=rnd, **r))
                    kp = key_peer(r)
                    if kp:
                        k, tag = kp
                        slot = peers.setdefault(k, {})
                        slot[tag] = min(slot.get(tag, float("inf")), r["median_ms"])
            print(f"[{time.time() - t0:6.0f} s] {w['name']} round {rnd + 1}/{args.rounds} done", flush=True)
    print()
    print(f"{'work':10} {'shape':34} {'dtype':5} {'ours ms':>10} {'torch ms':>10} {'torch/ours':>10} {'target':>7}  met")
    table = []
    for k in sorted(ours, key=lambda k: (list(TARGET).index(k[0]), k[1], k[2])):
        work, shape, dtype = k
        peer = peers.get((work, shape, "f32"), {})
        if not peer:
            continue
        tag, best = min(peer.items(), key=lambda kv: kv[1])
        ratio = best / ours[k]
        met = ratio >= TARGET[work]
        note = f" (peer {tag})" if work == "train" else ""
        if work == "online" and dtype == "f16":
            f32 = ours.get((work, shape, "f32"))
            note = f" (f16 {'faster' if f32 and ours[k] < f32 else 'NOT faster'} than our f32)"
        print(f"{work:10} {shape:34} {dtype:5} {ours[k]:10.3f} {best:10.3f} {ratio:10.2f} {TARGET[work]:7.1f}  {'yes' if met else 'NO'}{note}")
        table.append(dict(work=work, shape=shape, dtype=dtype, ours_ms=ours[k], torch_ms=best, torch_peer=tag, ratio=ratio,
                          target=TARGET[work], met=met))
    with open(args.out, "w") as f:
        json.dump(dict(table=table, rows=log, torch_threads=__import__("torch").get_num_threads(),
                       cpus=os.cpu_count(), seconds=time.time() - t0), f, indent=1)
    print(f"\nwrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
