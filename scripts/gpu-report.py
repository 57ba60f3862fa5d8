#!/usr/bin/env python3
"""Merge a GPU run's benchmark outputs into OUT/report.md and OUT/results.json (stdlib only, 3.9+).

Usage:  python3 scripts/gpu-report.py --in DIR --out DIR [--card TEXT] [--dry-run]

Reads every *.json / *.jsonl file in DIR (not recursive):
  - `twin bench --json` output: one object {"card": {...}, "rows": [{...}, ...]} (our rows);
  - the peers' JSON lines (benches/w1_torch.py, w2_torch.py, w3_torch.py, shared/peer/torch_online.py):
    one object per line with "peer"; other lines (the "device ..." banner, warnings) are skipped.
and DIR/steps.tsv if present (step name, status ok/fail/skip/timeout, seconds, note; tab-separated).
Rows are matched on (work, dtype, shape[, variant for train]). report.md: the card, the steps, one table
per work (online, cluster, train) with our rows, PyTorch eager / torch.compile, our CPU, the floor and
the ratios (taken from our best CUDA row, else our best non-CPU row), rows with errors, unreadable
inputs. results.json: every row (with "side" and "source"), the card, the steps, the inputs.
It never fails on partial input: a file it cannot read is listed, and it exits 0 once report.md is
written. --dry-run marks the report as the kit's dry run (this machine's CPU and lavapipe, tiny
shapes: it shows the kit works, not how fast anything is).
"""
import argparse, datetime, json, math, os, sys

WORK_GROUPS = (("W1 online path", ("online",)), ("W2 clustering", ("lloyd", "cluster_one_user", "cluster_users")),
               ("W3 training step", ("train", "train_device")))
OP_WORK = {"gsu+esu": "online", "kmeans_lloyd20": "lloyd", "hier_cluster_one_user": "cluster_one_user",
           "w3_train_step": "train"}
DTYPE_ALIAS = {"float16": "f16", "float32": "f32", "bfloat16": "bf16", "half": "f16", "float": "f32"}
DASH = "—"


def num(x):
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_ms(v, small="{:.3f}"):
    """3 significant digits or so; below 1, `small` (ms: 3 decimals, ratios: 2 significant digits)."""
    v = num(v)
    if v is None:
        return DASH
    if v >= 1:
        return f"{v:,.0f}" if v >= 100 else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")
    return small.format(v) if v >= 0.01 else f"{v:.4f}" if small == "{:.3f}" else f"{v:.2g}"


def fmt_x(v):
    return fmt_ms(v, "{:.2g}")


def fmt_rate(v):
    v = num(v)
    if v is None:
        return None
    return f"{v / 1e6:.2f}M" if v >= 1e6 else (f"{v / 1e3:.1f}k" if v >= 1e4 else f"{v:,.0f}")


def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def shape_kv(shape):
    out = {}
    for part in str(shape).split(","):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip()
    return out


def shape_sort(shape):
    nums = [num(v) or 0.0 for v in shape_kv(shape).values()]
    return (len(nums), nums, str(shape))


# ---------------------------------------------------------------- reading

def normalize(row, source):
    """Fill work / shape / dtype / side for one raw row; old torch_online.py rows become two."""
    if not isinstance(row, dict):
        return []
    r = dict(row)
    r["source"] = source
    r["side"] = "peer" if ("peer" in r or r.get("op") in OP_WORK) else "ours"
    if "work" not in r and r.get("op") in OP_WORK:
        r["work"] = OP_WORK[r["op"]]
    w = r["work"] = str(r.get("work", "?"))
    if "shape" not in r:
        if w == "online" and "L" in r and "B" in r:
            r["shape"] = f"L={r['L']},B={r['B']}"
        elif w == "lloyd" and "N" in r:
            r["shape"] = f"N={r['N']},k={r.get('k')},dim={r.get('d', r.get('dim', 64))},iters=20"
        elif w == "cluster_one_user" and "N" in r:
            r["shape"] = f"N={r['N']}"
        elif w == "train" and "L" in r:
            r["shape"] = f"B={r.get('B', 512)},L={r['L']}"
        else:
            r["shape"] = "?"
    r["shape"] = str(r["shape"])
    r["dtype"] = DTYPE_ALIAS.get(str(r.get("dtype", "f32")), str(r.get("dtype", "f32")))
    if r["side"] == "peer":
        r.setdefault("peer", "torch")
        if "device_kind" not in r:               # older rows: guess from the device name or the old peer
            gpu = any(t in str(r.get("device", "")).lower() for t in ("nvidia", "cuda", "h100", "h200", "a100"))
            r["device_kind"] = "cuda" if gpu or r.get("op") in ("gsu+esu", "kmeans_lloyd20",
                                                                "hier_cluster_one_user") else "cpu"
        if "median_ms" not in r and "eager_ms" in r:           # shared/peer/torch_online.py online rows
            a = dict(r, mode="eager", median_ms=r["eager_ms"])
            b = dict(r, mode="compile", median_ms=r.get("compiled_ms"))
            if num(b["median_ms"]) is None:
                b["error"] = "compile failed (no time)"
            return [a, b]
        if "median_ms" not in r and "ms" in r:
            r["median_ms"] = r["ms"]
        r.setdefault("mode", "eager")
    else:
        r.setdefault("backend", "?")
        r.setdefault("version", "")
    return [r]


def load_file(path):
    """-> dict(rows, card, banners, bad_lines, kind) or raises ValueError when nothing is readable."""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        text = f.read()
    name = os.path.basename(path)
    res = dict(rows=[], cards=[], banners=[], bad_lines=0, kind="?")

    def take(obj):
        if isinstance(obj, dict) and "rows" in obj:
            if isinstance(obj.get("card"), dict):
                res["cards"].append(obj["card"])
            for r in obj.get("rows") or []:
                res["rows"].extend(normalize(r, name))
            res["kind"] = "twin bench"
        elif isinstance(obj, dict) and "card" in obj and isinstance(obj["card"], dict):
            res["cards"].append(obj["card"])
        elif isinstance(obj, dict):
            res["rows"].extend(normalize(obj, name))
            res["kind"] = "json lines"
        elif isinstance(obj, list):
            for r in obj:
                res["rows"].extend(normalize(r, name))
            res["kind"] = "json list"
        else:
            raise ValueError("not an object")

    try:
        take(json.loads(text))
        return res
    except ValueError:
        pass
    # JSON lines, or a file cut short: decode every complete object; a {"card": ..., "rows": [...]}
    # cut mid-way still gives its card and its complete rows.
    dec, starts, i = json.JSONDecoder(), set(), text.find("{")
    while i >= 0:
        try:
            obj, end = dec.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        starts.add(i)
        if isinstance(obj, dict) and "rows" not in obj and not ({"work", "op", "peer", "shape"} & set(obj)):
            if "bw_bytes_per_s" in obj or "backend" in obj:
                res["cards"].append(obj)                 # a card on its own
        else:
            take(obj)
        i = text.find("{", end)
    pos = 0
    for line in text.splitlines(True):
        s = line.strip()
        if s.startswith("{") and pos + line.index("{") not in starts:
            res["bad_lines"] += 1
        elif s.startswith("device "):
            res["banners"].append(s)
        pos += len(line)
    if res["cards"] and res["kind"] != "twin bench":
        res["kind"] = "twin bench"
    if res["bad_lines"]:
        res["kind"] += ", partial"
    if not res["rows"] and not res["cards"]:
        raise ValueError(f"no JSON rows ({res['bad_lines']} unparsable lines)" if res["bad_lines"]
                         else "no JSON rows")
    return res


def load_steps(path):
    steps = []
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            p = line.rstrip("\n").split("\t")
            p += [""] * (4 - len(p))
            steps.append(dict(step=p[0], status=p[1], seconds=p[2], note="\t".join(p[3:]).strip()))
    return steps


# ---------------------------------------------------------------- tables

def variant_of(r):
    if r.get("work") != "train":
        return ""
    if r.get("variant"):
        return str(r["variant"])
    return "twin-v2" if "v2" in str(r.get("version", "")).lower() else "twin"


def ok(r):
    return "error" not in r and num(r.get("median_ms")) is not None


def best(rows):
    good = [r for r in rows if ok(r)]
    return min(good, key=lambda r: num(r["median_ms"])) if good else None


def rate(r):
    """users/s or samples/s for the rate-reported works, from the row or from the shape."""
    kv = shape_kv(r.get("shape", ""))
    if r.get("work") == "cluster_users":
        if num(r.get("users_per_s")) is not None:
            return num(r["users_per_s"])
        n = num(kv.get("users"))
    elif r.get("work") == "train":
        if num(r.get("samples_per_s")) is not None:
            return num(r["samples_per_s"])
        n = num(kv.get("B"))
    else:
        return None
    m = num(r.get("median_ms"))
    return n / (m / 1e3) if n and m else None


def timing(r, tag=""):
    if r is None:
        return DASH
    if not ok(r):
        return f"{tag}{'error' if 'error' in r else 'no time'}"
    s = f"{tag}{fmt_ms(r['median_ms'])}"
    if num(r.get("p10_ms")) is not None and num(r.get("p90_ms")) is not None:
        s += f" ({fmt_ms(r['p10_ms'])}–{fmt_ms(r['p90_ms'])})"
    rt = fmt_rate(rate(r))
    if rt:
        s += f" · {rt} {'users' if r.get('work') == 'cluster_users' else 'samples'}/s"
    if r.get("side") == "peer" and r.get("gsu"):
        s += f" [gsu {r['gsu']}]"
    if r.get("users_done") is not None and r.get("users_done") != num(shape_kv(r["shape"]).get("users")):
        s += f" [{r['users_done']} users run]"
    return s


def peer_cell(rows):
    b = best(rows)
    return timing(b) if b else ("error" if rows else DASH)


def ratio(ours, peer):
    if ours is None or peer is None:
        return None
    ro, rp = rate(ours), rate(peer)
    if ours.get("work") == "cluster_users" and ro and rp:
        return rp / ro                       # time ratio at the measured rates
    a, b = num(ours.get("median_ms")), num(peer.get("median_ms"))
    return a / b if a and b else None


def floor_of(rows, b):
    for r in ([b] if b else []) + rows:
        if num(r.get("floor_us")) is not None:
            return num(r["floor_us"])
        if num(r.get("floor_ms")) is not None:
            return num(r["floor_ms"]) * 1e3
    return None


def table(rows, works, multi_work):
    groups = {}
    for r in rows:
        if r.get("work") in works:
            groups.setdefault((r["work"], r.get("dtype", "f32"), r.get("shape", "?"), variant_of(r)), []).append(r)
    if not groups:
        return ["(no rows)", ""]
    cpu_peers = any(r["side"] == "peer" and r.get("device_kind") == "cpu" for g in groups.values() for r in g)
    head = (["work"] if multi_work else []) + ["dtype", "shape", "ours (median ms, p10–p90)", "PyTorch eager",
                                               "torch.compile", "our CPU", "floor µs", "ours/floor",
                                               "ours/eager", "ours/compile"]
    if cpu_peers:
        head += ["torch CPU eager", "our CPU / torch CPU"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    dorder = {"f16": 0, "f32": 1}
    keys = sorted(groups, key=lambda k: (works.index(k[0]), dorder.get(k[1], 2), k[1], shape_sort(k[2]), k[3]))
    for key in keys:
        g = groups[key]
        ours = [r for r in g if r["side"] == "ours"]
        gpu = [r for r in ours if r.get("backend") != "cpu"]
        cpu = [r for r in ours if r.get("backend") == "cpu"]
        b = best([r for r in gpu if r.get("backend") == "cuda"]) or best(gpu)
        peers = [r for r in g if r["side"] == "peer"]
        pe = [r for r in peers if r.get("device_kind") != "cpu" and r.get("mode") == "eager"]
        pc = [r for r in peers if r.get("device_kind") != "cpu" and r.get("mode") == "compile"]
        pcpu = [r for r in peers if r.get("device_kind") == "cpu" and r.get("mode") == "eager"]
        ocells = []
        for r in sorted(gpu, key=lambda r: (r.get("backend", ""), str(r.get("version", "")))):
            t = timing(r, f"{r.get('backend')} {r.get('version', '')}".strip() + ": ")
            ocells.append(f"**{t}**" if r is b and len(gpu) > 1 else t)
        fl = floor_of(ours, b) or floor_of(peers, None)
        to_floor = num(b["median_ms"]) * 1e3 / fl if b and fl else None
        shape = key[2] + (f" {key[3]}" if key[3] else "")
        line = ([key[0]] if multi_work else []) + [key[1], shape, "<br>".join(ocells) or DASH,
                                                   peer_cell(pe), peer_cell(pc), peer_cell(cpu),
                                                   fmt_x(fl) if fl else DASH, fmt_x(to_floor),
                                                   fmt_x(ratio(b, best(pe))), fmt_x(ratio(b, best(pc)))]
        if cpu_peers:
            line += [peer_cell(pcpu), fmt_x(ratio(best(cpu), best(pcpu)))]
        out.append("| " + " | ".join(cell(c) for c in line) + " |")
    return out + [""]


def card_line(card, text):
    parts = []
    if card:
        parts.append(f"{card.get('device', '?')} ({card.get('backend', '?')})")
        if num(card.get("bw_bytes_per_s")):
            parts.append(f"copy {num(card['bw_bytes_per_s']) / 1e9:,.1f} GB/s")
        for k in ("f32_flops", "f16_flops"):
            if num(card.get(k)):
                parts.append(f"{k[:3]} {num(card[k]) / 1e12:,.3g} TFLOP/s")
        if card.get("how"):
            parts.append(f"({card['how']})")
    if text:
        parts.append(text)
    return " · ".join(parts) if parts else "unknown card"


def distinct_cards(cards):
    """One card per backend (the first seen): every bench file repeats its backend's card."""
    seen, out = set(), []
    for c in cards:
        key = c.get("backend")
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def report(data, now):
    cards = distinct_cards(data["cards"])
    card = cards[0] if cards else None
    title_card = data["card_text"] or (card or {}).get("device") or "unknown card"
    L = [f"# twin-engine benchmark report — {now:%Y-%m-%d %H:%M} UTC — {title_card}", ""]
    L += [f"- Card ({c.get('backend', '?')}): {card_line(c, '')}" for c in cards] or [f"- Card: {card_line(None, data['card_text'])}"]
    for b in sorted(set(data["banners"])):
        L.append(f"<br>Peer: `{b}`")
    L.append("")
    if data["steps"] is not None:
        L += ["## Steps", "", "| step | status | seconds | note |", "|---|---|---|---|"]
        for s in data["steps"]:
            L.append("| " + " | ".join(cell(s[k]) for k in ("step", "status", "seconds", "note")) + " |")
        L.append("")
    rows = data["rows"]
    known = set()
    for title, works in WORK_GROUPS:
        known.update(works)
        L += [f"## {title}", ""] + table(rows, list(works), len(works) > 1)
    serve = [r for r in rows if r.get("work") == "serve"]
    known.add("serve")
    L += ["## Serving under load (`twin serve` + `twin loadtest`, scripts/serve-load)", ""]
    if serve:
        L += ["| backend | mode | callers | requests | errors | req/s | p50 ms | p99 ms | max ms |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(serve, key=lambda r: (str(r.get("backend")), str(r.get("version")), num(r.get("concurrency")) or 0)):
            L.append("| " + " | ".join(cell(c) for c in (
                r.get("backend", "?"), r.get("version", "?"), r.get("concurrency", "?"), r.get("requests", "?"),
                r.get("errors", "?"), fmt_rate(r.get("rps")) or DASH, fmt_ms(r.get("p50_ms")), fmt_ms(r.get("p99_ms")),
                fmt_ms(r.get("max_ms")))) + " |")
    else:
        L.append("none")
    L.append("")
    other = sorted({r.get("work", "?") for r in rows} - known)
    if other:
        L += ["## Other rows", ""] + table(rows, other, True)
    L += ["Times in ms (median, p10–p90 in brackets). Ratios use our best CUDA row (bold where there is a "
          "choice), else our best non-CPU row; the peers' cells are their best row. cluster_users ratios "
          "compare rates; a time-boxed peer ran fewer users (shown).", ""]
    errs = [r for r in rows if "error" in r]
    L += ["## Rows with errors", ""]
    if errs:
        L += ["| source | who | work | dtype | shape | error |", "|---|---|---|---|---|---|"]
        for r in errs:
            who = (f"torch {r.get('mode')} ({r.get('device_kind')})" if r["side"] == "peer"
                   else f"ours {r.get('backend')} {r.get('version', '')}")
            L.append("| " + " | ".join(cell(c) for c in (r["source"], who, r.get("work", "?"), r.get("dtype"),
                                                           r.get("shape"), str(r["error"])[:300])) + " |")
    else:
        L.append("none")
    L += ["", "## Inputs", ""]
    for i in data["inputs"]:
        extra = f", {i['bad_lines']} unparsable lines" if i["bad_lines"] else ""
        L.append(f"- `{i['file']}`: {i['kind']}, {i['rows']} rows{extra}")
    if not data["inputs"]:
        L.append("- none")
    L += ["", "## Unreadable inputs", ""]
    L += [f"- `{u['file']}`: {u['why']}" for u in data["unreadable"]] or ["none"]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--card", default="")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc)
    data = dict(generated_utc=now.strftime("%Y-%m-%dT%H:%M:%SZ"), card_text=args.card, cards=[], banners=[],
                steps=None, inputs=[], unreadable=[], rows=[])
    try:
        names = sorted(os.listdir(args.inp))
    except OSError as ex:
        names = []
        data["unreadable"].append(dict(file=args.inp, why=f"input folder: {ex}"))
    for n in names:
        p = os.path.join(args.inp, n)
        if n == "steps.tsv":
            try:
                data["steps"] = load_steps(p)
            except Exception as ex:  # noqa: BLE001
                data["unreadable"].append(dict(file=n, why=repr(ex)[:200]))
            continue
        if not (n.endswith(".json") or n.endswith(".jsonl")) or not os.path.isfile(p):
            continue
        try:
            res = load_file(p)
        except Exception as ex:  # noqa: BLE001 - any file may be cut short or garbage
            data["unreadable"].append(dict(file=n, why=str(ex)[:200] or repr(ex)[:200]))
            continue
        data["rows"] += res["rows"]
        data["cards"] += res["cards"]
        data["banners"] += res["banners"]
        data["inputs"].append(dict(file=n, kind=res["kind"], rows=len(res["rows"]), bad_lines=res["bad_lines"]))
        if res["bad_lines"]:
            data["unreadable"].append(dict(file=n, why=f"partly: {res['bad_lines']} unparsable lines "
                                                       f"({len(res['rows'])} rows read)"))
    data["card"] = data["cards"][0] if data["cards"] else None
    md = report(data, now)
    if args.dry_run:
        title, _, rest = md.partition("\n")
        md = (title + "\n\n> Dry run: this machine's CPU and lavapipe at tiny shapes. It shows that the kit "
              "works end to end, not how fast anything is.\n" + rest)
    try:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as f:
            f.write(md)
        with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=str)
    except OSError as ex:
        print(f"gpu-report: cannot write to {args.out}: {ex}", file=sys.stderr)
        return 1
    print(f"gpu-report: {len(data['rows'])} rows from {len(data['inputs'])} files -> {args.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
