//! Every CUDA kernel compiles through NVRTC for sm_90 (no GPU needed), and, where a GPU is
//! present, GSU v1 and v2 agree bit for bit and the backend says no when it is absent.
//! Without libnvrtc the compile test prints a skip note, unless `CI` or `TWIN_REQUIRE_CUDA` is
//! set: then it fails; with `TWIN_REQUIRE_CUDA` a missing GPU fails every test here too.

#[cfg(feature = "cuda")]
mod with_cuda {
    use twin_engine::backend::cuda::{compile_all_kernels, nvrtc_present, CudaBackend, GsuVersion, KERNEL_SOURCES};
    use twin_engine::backend::{Backend, HostTable, OnlineRequests, OnlineTables};

    use crate::common::{cuda_missing, require_cuda};

    fn ci() -> bool {
        std::env::var_os("CI").is_some()
    }

    #[test]
    fn every_kernel_compiles_for_sm90() {
        if !nvrtc_present() {
            assert!(!ci(), "CI is set but libnvrtc could not be loaded (pip install nvidia-cuda-nvrtc==13.0.88, set LD_LIBRARY_PATH)");
            assert!(!require_cuda(), "TWIN_REQUIRE_CUDA is set but libnvrtc (CUDA's run-time compiler) could not be loaded");
            eprintln!("cuda_compile: skipped, libnvrtc not found (set LD_LIBRARY_PATH to an NVRTC 13.0 lib dir)");
            return;
        }
        let done = match compile_all_kernels("sm_90") {
            Ok(d) => d,
            Err(e) => panic!("kernel compile failed:\n{e}"),
        };
        assert_eq!(done.len(), KERNEL_SOURCES.len());
        // The training kernels are in the list (compile_kernel checks each entry point is in the PTX).
        for (stem, entries) in [
            ("attn", &["attn_fwd", "attn_bwd"][..]),
            ("segment_sum", &["segment_sum_fwd", "segment_sum_mapped_fwd"][..]),
            ("gemm", &["gemm_fwd_nn", "gemm_fwd_nt", "gemm_fwd_tn", "gemm_combine_fwd"][..]),
            ("bce", &["bce_fwd", "bce_mean_fwd"][..]),
            ("cross_bias", &["cross_bias_fwd", "cross_bias_dense_fwd", "cross_bias_bwd", "cross_tables_fwd"][..]),
            ("gsu_train", &["gsu_train_fwd", "gsu_train_map_tail_fwd"][..]),
            ("twin_rows", &["twin_rows_fwd", "twin_rows_value_fwd"][..]),
        ] {
            let src = KERNEL_SOURCES.iter().find(|s| s.stem == stem).unwrap_or_else(|| panic!("kernels/{stem}.cu not in KERNEL_SOURCES"));
            assert_eq!(src.functions, entries, "kernels/{stem}.cu entry points");
            assert!(done.iter().any(|(s, _)| s == stem));
        }
        for (stem, bytes) in &done {
            assert!(*bytes > 0, "{stem}: empty PTX");
            eprintln!("cuda_compile: kernels/{stem}.cu -> {bytes} bytes of PTX for sm_90");
        }
    }

    #[test]
    fn missing_gpu_is_a_typed_error() {
        // On a machine without libcuda or a GPU this must be an error, never a panic.
        match CudaBackend::new(0) {
            Ok(b) => eprintln!("cuda_compile: device present: {}", b.describe()),
            Err(e) => cuda_missing("opening device 0", &e.to_string()),
        }
        // An ordinal past the last device is always an error.
        assert!(CudaBackend::new(1 << 20).is_err());
    }

    /// Small deterministic generator (tests only).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn unit(&mut self) -> f32 {
            (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        }
    }

    fn tables(be: &dyn Backend, n_items: usize, d: usize, heads: usize, vocab: &[usize], f16: bool, rng: &mut Lcg) -> OnlineTables {
        let mut table = |rows: usize, cols: usize, half: bool, name: &'static str| {
            let data: Vec<f32> = (0..rows * cols).map(|_| rng.unit()).collect();
            let t = HostTable::f32(rows, cols, data).unwrap();
            let t = if half { t.to_f16() } else { t };
            be.upload_table(name, &t).unwrap()
        };
        let v: usize = vocab.iter().sum();
        let mut offs = vec![0u32];
        for &x in vocab {
            offs.push(offs.last().unwrap() + x as u32);
        }
        OnlineTables {
            p_q: table(n_items, d, f16, "p_q"),
            p_k: table(n_items, d, f16, "p_k"),
            p_v: table(n_items, d, f16, "p_v"),
            cross_bias: table(v, heads, false, "cross_bias"),
            cross_value: table(v, d, false, "cross_value"),
            w_o: table(d, d, false, "w_o"),
            cross_offsets: offs,
            heads,
        }
    }

    #[test]
    fn gsu_v1_and_v2_agree_on_device() {
        let be = match CudaBackend::new(0) {
            Ok(b) => b,
            Err(e) => return cuda_missing("GSU v1/v2 comparison", &e.to_string()),
        };
        be.set_poison_outputs(true);
        let mut rng = Lcg(7);
        let vocab = [5usize, 7, 3];
        // (L, B) per request: ragged, L < K, L = 1, a request with no candidates, several tiles
        // and several chunks; D = 128/4 heads and an odd D = 12/3 heads (scalar key path).
        let shapes: &[&[(usize, usize)]] = &[&[(1, 3), (50, 70), (0, 0), (2000, 130), (700, 0), (130, 1)], &[(5000, 65)]];
        for &(d, heads) in &[(128usize, 4usize), (12, 3)] {
            for &f16 in &[true, false] {
                let t = tables(&be, 500, d, heads, &vocab, f16, &mut rng);
                for reqs in shapes {
                    let mut batch = OnlineRequests::new();
                    for &(l, b) in reqs.iter() {
                        if l == 0 {
                            continue;
                        }
                        // Repeated items give exactly equal scores: the tie rule is exercised.
                        let items: Vec<u32> = (0..l).map(|_| rng.next() % 300).collect();
                        let cross: Vec<u32> = (0..l).flat_map(|_| vec![0, 5, 12]).map(|x| x as u32).collect();
                        let sizes: Vec<f32> = (0..l).map(|i| 1.0 + (i % 20) as f32).collect();
                        let cands: Vec<u32> = (0..b).map(|_| rng.next() % 500).collect();
                        batch.push(&items, &cross, &sizes, &cands);
                    }
                    let bt = batch.as_batch();
                    let cross = be.cross_bias(&t.cross_bias, bt.cross, t.n_cross()).unwrap();
                    let bias = be.log_size_bias(&cross, bt.sizes, heads).unwrap();
                    for &k in &[100usize, 7] {
                        be.set_gsu_version(GsuVersion::V1);
                        let a = be.gsu_topk(&t, &bt, &bias, k).unwrap();
                        be.set_gsu_version(GsuVersion::V2);
                        let b = be.gsu_topk(&t, &bt, &bias, k).unwrap();
                        assert_eq!(a, b, "GSU v1 != v2 (D={d}, f16={f16}, k={k})");
                        let o1 = {
                            be.set_gsu_version(GsuVersion::V1);
                            be.online(&t, &bt, k).unwrap()
                        };
                        be.set_gsu_version(GsuVersion::V2);
                        let o2 = be.online(&t, &bt, k).unwrap();
                        assert_eq!(o1.topk, o2.topk);
                        assert_eq!(o1.out, o2.out);
                        assert_eq!(o2.topk, b, "online top-K differs from the gsu_topk op");
                    }
                }
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn every_kernel_compiles_for_sm90() {
    assert!(!crate::common::require_cuda(), "TWIN_REQUIRE_CUDA is set but this test binary was built without the `cuda` feature");
    if std::env::var_os("CI").is_some() {
        eprintln!("cuda_compile: built without the `cuda` feature; run `cargo test --features cuda` to compile the kernels");
    } else {
        eprintln!("cuda_compile: skipped (no `cuda` feature)");
    }
}

/// Every entry point of every file in `kernels/` runs through the CUDA backend's host code on
/// the CPU emulator: the online path (the three GSU versions and both ESU versions, f32 and f16 tables), a gather, k-means
/// (the standalone ops, the device-resident Lloyd loop and the clustering tree), a training step
/// and the dense cross bias, the serving network's forward pass, the optimizers and the training step's sequence ops
/// on device tensors (cross tables, training GSU, attention rows, mapped segment sums). The emulator counts the kernels it launched; none may be missing.
#[cfg(feature = "cuda-emu")]
#[test]
fn every_kernel_launches_on_the_emulator() {
    use twin_engine::backend::cuda::{CudaBackend, EsuVersion, GsuVersion, KERNEL_SOURCES};
    use twin_engine::backend::{Backend, DType, DeviceOps, KmeansBatch, TOP_K};
    use twin_engine::model::{Model, ModelConfig};
    use twin_engine::train::step::{self, BackendOps, Weights};
    use twin_engine::train::Variant;

    use crate::common::{randn, requests, Tables};

    let be = CudaBackend::emulated(7).unwrap();
    be.set_poison_outputs(true);
    for dtype in [DType::F32, DType::F16] {
        let t = Tables::new(3, dtype);
        let tables = t.upload(&be);
        let req = requests(&[(97, 3), (1025, 2)], 5);
        for v in [GsuVersion::V1, GsuVersion::V2, GsuVersion::V3] {
            be.set_gsu_version(v);
            be.online(&tables, &req.as_batch(), TOP_K).unwrap();
        }
        for e in [EsuVersion::V1, EsuVersion::V2] {
            be.set_esu_version(e);
            be.online(&tables, &req.as_batch(), TOP_K).unwrap();
        }
        be.gather(&tables.p_k, &[0, 3, 7]).unwrap();
    }
    let mut rng = twin_engine::rng::SplitMix64::new(9);
    let points = randn(&mut rng, 300 * 8, 1.0);
    let (offsets, k) = ([0u32, 120, 300], [3u32, 5]);
    let batch = KmeansBatch { dim: 8, points: &points, offsets: &offsets, k: &k };
    let res = be.kmeans(&batch, &[1, 2], 5).unwrap();
    let assign = be.kmeans_assign(&batch, &res.centroids).unwrap();
    be.kmeans_update(&batch, &assign, &res.centroids).unwrap();
    // dim 64: the v2 assignment (the default version) applies.
    let wide = randn(&mut rng, 300 * 64, 1.0);
    be.kmeans(&KmeansBatch { dim: 64, points: &wide, offsets: &offsets, k: &k }, &[1, 2], 5).unwrap();
    // Version 1's update (v2, the default, ran above).
    be.set_kmeans_version(twin_engine::backend::cuda::KmeansVersion::V1);
    be.kmeans_update(&batch, &assign, &res.centroids).unwrap();
    be.set_kmeans_version(twin_engine::backend::cuda::KmeansVersion::V2);
    // The clustering tree on resident item points (cluster_tree.cu's level kernels).
    let pts = be.item_points(&points, 8).unwrap();
    let tree_ids: Vec<u32> = (0..300).collect();
    let job = twin_engine::backend::TreeJob { ids: &tree_ids, offsets: &offsets, streams: &[1, 2], gamma: 20, max_iter: 5 };
    be.kmeans_tree(&pts, &job).unwrap();
    let items = twin_engine::bench::train::items(300);
    let mut cfg = ModelConfig::for_items(&items);
    cfg.mlp_hidden = vec![16];
    let model = Model::init(cfg, &items, 1).unwrap();
    let b = twin_engine::bench::train::batch(&model.config, 4, 30, false, 3);
    step::step(&BackendOps(&be), &Weights::of(&model), Variant::Twin, &b, true).unwrap();
    // The serving network on device tensors (copy_rows, gemm_dev, bias_act).
    let net = twin_engine::net::serving::ServingNet::new(&be, &model, DType::F32).unwrap();
    let hist: Vec<twin_engine::net::Behaviour> =
        (0..40).map(|i| twin_engine::net::Behaviour::raw((i * 7 % 300) as u32, 1_000 + i, 10.0, 20.0)).collect();
    let r =
        twin_engine::net::ScoreRequest { request_time: 10_000, long: hist.clone(), short: hist, candidates: vec![1, 2, 3], debug: false };
    net.forward(&be, &model, Variant::Twin, &[&r]).unwrap();
    // The MLP head's backward piece.
    be.bias_act_bwd(
        &be.tensor_f32("dy", 2, 2, &[1.0; 4]).unwrap(),
        &be.tensor_f32("y", 2, 2, &[0.0, 1.0, 2.0, 0.0]).unwrap(),
        twin_engine::backend::Act::Relu,
    )
    .unwrap();
    // BCE on tensors (its mean formed on the device).
    let mut st = twin_engine::backend::Staging::new();
    let ys = st.f32s("labels", &[1.0, 0.0]).unwrap();
    let staged = be.upload_staging(st).unwrap();
    be.bce_dev(&be.tensor_f32("logits", 2, 1, &[0.3, -0.2]).unwrap(), &ys, &staged).unwrap();
    // The optimizers on device tensors.
    let step = twin_engine::backend::AdamStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, bc1: 0.1, bc2: 0.001 };
    let t = |name| be.tensor_f32(name, 4, 2, &[0.5; 8]).unwrap();
    be.adam(&t("w"), &t("g"), &t("m"), &t("v"), &step).unwrap();
    let mut st = twin_engine::backend::Staging::new();
    let rows = st.rows("rows", &[1, 3], 4).unwrap();
    let staged = be.upload_staging(st).unwrap();
    be.adagrad_rows(&t("w"), &t("acc"), &rows, &be.tensor_f32("g", 2, 2, &[0.5; 4]).unwrap(), &staged, 0.05, 1e-8).unwrap();
    let dims = twin_engine::backend::CrossDims { heads: 4, n_cross: 3, dim: 8 };
    let (e, w_c, beta) = (randn(&mut rng, 5 * 3 * 8, 1.0), randn(&mut rng, 4 * 3 * 8, 1.0), randn(&mut rng, 4 * 3, 1.0));
    be.cross_bias_dense(&e, &w_c, &beta, dims).unwrap();
    // A split-k GEMM (one output tile, k >= 2,048): its partials' combine kernel.
    let (ga, gb) = (randn(&mut rng, 2048 * 4, 1.0), randn(&mut rng, 2048 * 3, 1.0));
    be.gemm(twin_engine::backend::GemmKind::TN, &ga, &gb, 4, 2048, 3).unwrap();
    // The training step's sequence ops on device tensors: cross tables forward and backward, the
    // training GSU (K = 2 < L for both samples, so the selection runs; a map tail), the attention
    // rows and values, the mapped segment sum.
    {
        use twin_engine::backend::cpu::gsu_train::FeatDims;
        use twin_engine::backend::{CrossParams, Elem, FeatTables, GsuTrainIn, Staging, TwinBounds, TwinRowsIn};
        let fd = FeatDims { id: 4, small: 2 };
        let rows = [6usize, 5, 4, 3];
        let tabs: Vec<_> =
            (0..4).map(|f| be.tensor_f32("table", rows[f], fd.part(f).1, &randn(&mut rng, rows[f] * fd.part(f).1, 1.0)).unwrap()).collect();
        let (long_offsets, short_offsets) = ([0u32, 3, 8], [0u32, 1, 3]);
        let n_pos = 8 + 3;
        let feat: Vec<u32> = (0..n_pos * 4).map(|i| (i * 7 % rows[i % 4]) as u32).collect();
        let cross: Vec<u32> = (0..n_pos * 3).map(|i| (i * 3 % 20) as u32).collect();
        let log_n = vec![0.5f32; n_pos];
        let x = TwinRowsIn {
            long_offsets: &long_offsets,
            short_offsets: &short_offsets,
            feat: &feat,
            cross: &cross,
            log_n: &log_n,
            k: 2,
            extra_tail: 2,
        };
        let mut st = Staging::new();
        let slot = st.twin_rows(&x, TwinBounds { tables: rows, cross_rows: 20, n_cross: 3 }).unwrap();
        let offs = st.offsets("cross offsets", &[0, 5, 13, 20]).unwrap();
        let all: Vec<u32> = (0..slot.map_len() as u32).collect();
        let perm = st.ids("perm", &all, slot.map_len()).unwrap();
        let segs = st.offsets("segs", &[0, 4, slot.map_len() as u32]).unwrap();
        let staged = be.upload_staging(st).unwrap();
        let up =
            |name, r: usize, c: usize, rng: &mut twin_engine::rng::SplitMix64| be.tensor_f32(name, r, c, &randn(rng, r * c, 1.0)).unwrap();
        let (e, w_c, beta, w_vc) =
            (up("e", 20, 8, &mut rng), up("w_c", 4, 24, &mut rng), up("beta", 4, 3, &mut rng), up("w_vc", 24, 6, &mut rng));
        let cp = CrossParams { e: &e, w_c: &w_c, beta: &beta, w_vc: &w_vc, offsets: &offs, dims };
        let (cb, cv) = be.cross_tables_dev(&cp, &staged).unwrap();
        be.cross_tables_bwd_dev(&cp, &cb, &cv, &staged).unwrap();
        let feats = FeatTables { tables: [&tabs[0], &tabs[1], &tabs[2], &tabs[3]], dims: fd };
        let qbar = up("qbar", 2, fd.width(), &mut rng);
        let gsu =
            be.gsu_train_dev(&GsuTrainIn { qbar: &qbar, feats, cb: &cb, heads: 4, q_scale: 0.25, bias: true }, &slot, &staged).unwrap();
        be.twin_rows_dev(&feats, &cb, 4, &gsu, &slot, &staged).unwrap();
        be.twin_rows_value_dev(&be.tensor_zeros("v", slot.n_att(), 6, Elem::F32).unwrap(), &cv, &gsu, &slot, &staged).unwrap();
        be.segment_sum_mapped_dev(&up("src", slot.map_rows(), 2, &mut rng), &perm, &segs, &gsu, &slot, &staged).unwrap();
    }

    let launched = be.launched_kernels();
    let missing: Vec<&str> = KERNEL_SOURCES.iter().flat_map(|s| s.functions.iter().copied()).filter(|f| !launched.contains(f)).collect();
    assert!(missing.is_empty(), "kernels never launched on the emulator: {missing:?} (launched: {launched:?})");
    eprintln!("every kernel launched on the emulator: {} entry points", launched.len());
}
