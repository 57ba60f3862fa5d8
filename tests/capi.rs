//! The C ABI from C: compiles `examples/c/score.c` against `include/twin_engine.h` and the
//! cdylib, runs it on a model built here, and checks that its CTRs are the ones the Rust
//! `Engine` gives for the same request; checks that the header's struct layouts and constants
//! are the ones the Rust side exports. Needs a C compiler (`$CC` or `cc`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use twin_engine::backend::BackendChoice;
use twin_engine::capi::{self, TwinBehaviour, TwinEngineOptions, TwinRequest};
use twin_engine::data::Items;
use twin_engine::features;
use twin_engine::model::{Model, ModelConfig};
use twin_engine::serve::{Behaviour, Engine, EngineConfig, ScoreRequest};
use twin_engine::train::Variant;

const N_ITEMS: usize = 200;

fn items(n: usize) -> Items {
    Items {
        author: (0..n as u64).map(|i| (i * 7919 % 31) as u32).collect(),
        topic: (0..n as u64).map(|i| (i * 13 % 11) as u32).collect(),
        duration_bucket: (0..n).map(|i| features::duration_bucket(i as f32 * 3.7)).collect(),
        external_id: (0..n as u64).map(|i| i * 10).collect(),
        n_authors: 31,
        n_topics: 11,
    }
}

fn write_model(path: &Path, seed: u64) {
    let it = items(N_ITEMS);
    let mut m = Model::init(ModelConfig::for_items(&it), &it, seed).unwrap();
    // Non-zero biases so the whole MLP path shows in the CTRs.
    for (name, t) in m.params_mut() {
        if name.starts_with("mlp_b") {
            t.data.iter_mut().enumerate().for_each(|(i, x)| *x = 0.01 * ((i % 7) as f32 - 3.0));
        }
    }
    m.save(path).unwrap();
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/`, where cargo puts the cdylib: test binaries live in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent directory");
    deps.parent().expect("deps/ has a parent directory").to_path_buf()
}

/// The cdylib, brought up to date with `cargo build --lib` (same profile and features; a no-op
/// when current). `cargo test` does not rebuild the cdylib, so a stale one from an older
/// source would otherwise be tested against the new Rust side.
fn cdylib() -> PathBuf {
    let dir = profile_dir();
    let name = format!("{}twin_engine{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let lib = dir.join(&name);
    {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(repo()).args(["build", "--lib"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        // The test build's own features (cuda-emu too): with another set cargo rebuilds the
        // library and the dependencies whose features differ (three minutes in CI, not one).
        let features: Vec<&str> =
            [("cuda", cfg!(feature = "cuda")), ("wgpu", cfg!(feature = "wgpu")), ("cuda-emu", cfg!(feature = "cuda-emu"))]
                .iter()
                .filter(|f| f.1)
                .map(|f| f.0)
                .collect();
        if !features.is_empty() {
            cmd.arg("--features").arg(features.join(","));
        }
        // The target directory is the profile directory's parent (plain `target/<profile>`).
        if let Some(target_dir) = dir.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        let status =
            cmd.status().unwrap_or_else(|e| panic!("`{cargo} build --lib` (for {name} in {}) failed to start: {e}", dir.display()));
        assert!(status.success(), "`{cargo} build --lib` (for {name} in {}) failed ({status})", dir.display());
    }
    assert!(lib.exists(), "{name} not found in {} (is `crate-type = [\"rlib\", \"cdylib\"]` set in Cargo.toml?)", dir.display());
    lib
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Compiles a C source against the header (and, with `link`, the cdylib) into `exe`.
fn compile(src: &Path, exe: &Path, link: bool) {
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I"]).arg(repo().join("include")).arg(src).arg("-o").arg(exe);
    if link {
        let dir = cdylib().parent().unwrap().to_path_buf();
        cmd.arg("-L").arg(&dir).arg("-ltwin_engine").arg(format!("-Wl,-rpath,{}", dir.display()));
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
}

fn fields<'a>(line: &'a str, key: &str) -> Option<Vec<&'a str>> {
    line.strip_prefix(key).and_then(|r| r.strip_prefix(' ')).map(|r| r.split_whitespace().collect())
}

fn behaviour(f: &[&str]) -> Behaviour {
    assert_eq!(f.len(), 5, "{f:?}");
    Behaviour {
        item: f[0].parse().unwrap(),
        timestamp: f[1].parse().unwrap(),
        play_time: f[2].parse().unwrap(),
        completion: f[3].parse().unwrap(),
        size: f[4].parse().unwrap(),
    }
}

#[test]
fn c_example_scores_like_the_rust_engine() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.twin");
    write_model(&model, 11);
    let exe = dir.path().join("score");
    compile(&repo().join("examples/c/score.c"), &exe, true);

    let out = run(Command::new(&exe).arg(&model).arg("cpu"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "score.c exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);

    // Read back what the program sent and got.
    let mut req = ScoreRequest::default();
    let (mut ctrs, mut bad, mut facts) = (Vec::new(), None, std::collections::HashMap::new());
    for line in stdout.lines() {
        if let Some(f) = fields(line, "long") {
            req.long.push(behaviour(&f));
        } else if let Some(f) = fields(line, "short") {
            req.short.push(behaviour(&f));
        } else if let Some(f) = fields(line, "ctr") {
            req.candidates.push(f[0].parse().unwrap());
            ctrs.push(f[1].parse::<f32>().unwrap());
        } else if let Some(rest) = line.strip_prefix("bad_request ") {
            bad = Some(rest.to_string());
        } else if let Some((k, v)) = line.split_once(' ') {
            facts.insert(k.to_string(), v.to_string());
        }
    }
    assert_eq!(facts["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(facts["model_version"], "1");
    assert_eq!(facts["scored_by"], "1");
    assert_eq!(facts["n_items"], N_ITEMS.to_string());
    req.request_time = facts["request_time"].parse().unwrap();
    assert!(!req.long.is_empty() && !req.short.is_empty(), "{stdout}");
    assert_eq!(ctrs.len(), 3, "{stdout}");
    assert!(ctrs.iter().all(|&c| c > 0.0 && c < 1.0), "{ctrs:?}");

    let cfg = EngineConfig { backend: BackendChoice::Cpu, variant: Variant::Twin, ..EngineConfig::default() };
    let want = Engine::open(&model, cfg).unwrap().score(&req).unwrap();
    for (i, (&got, &want)) in ctrs.iter().zip(&want.ctr).enumerate() {
        assert!((got - want).abs() <= 1e-6, "candidate {i} ({}): C printed {got}, Rust scores {want}", req.candidates[i]);
    }
    assert!(ctrs.windows(2).any(|w| w[0] != w[1]), "candidates should score differently: {ctrs:?}");

    let bad = bad.unwrap_or_else(|| panic!("no bad_request line:\n{stdout}"));
    let want_prefix = format!("{} TWIN_ERR_INVALID_INPUT: ", capi::TWIN_ERR_INVALID_INPUT);
    assert!(bad.starts_with(&want_prefix), "{bad}");
    assert!(bad.contains(&format!("candidates[1] = {N_ITEMS} is out of range")), "{bad}");
}

#[test]
fn c_example_reports_a_missing_model() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("score");
    compile(&repo().join("examples/c/score.c"), &exe, true);
    let missing = dir.path().join("no-such-model.twin");
    let out = run(Command::new(&exe).arg(&missing));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with(&format!("open_failed {} TWIN_ERR_IO: ", capi::TWIN_ERR_IO)), "{err}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

/// Sizes, offsets and constants as the C compiler sees them == as Rust exports them.
#[test]
fn header_matches_the_rust_side() {
    use std::mem::{offset_of, size_of};
    let mut want = vec![
        format!("sizeof(twin_behaviour) {}", size_of::<TwinBehaviour>()),
        format!("sizeof(twin_request) {}", size_of::<TwinRequest>()),
        format!("sizeof(twin_engine_options) {}", size_of::<TwinEngineOptions>()),
    ];
    macro_rules! off {
        ($c:literal, $t:ty, $($f:ident),*) => { $( want.push(format!("{}.{} {}", $c, stringify!($f), offset_of!($t, $f))); )* };
    }
    off!("twin_behaviour", TwinBehaviour, item, timestamp, play_time, completion, size);
    off!("twin_request", TwinRequest, request_time, long_seq, long_len, short_seq, short_len, candidates, n_candidates);
    off!(
        "twin_engine_options",
        TwinEngineOptions,
        struct_size,
        backend,
        variant,
        dtype,
        batching,
        max_wait_us,
        queue_capacity,
        max_batch_requests,
        max_batch_candidates,
        max_candidates,
        max_seq_len
    );
    let consts = [
        ("TWIN_OK", capi::TWIN_OK),
        ("TWIN_ERR_NULL_ARG", capi::TWIN_ERR_NULL_ARG),
        ("TWIN_ERR_INVALID_INPUT", capi::TWIN_ERR_INVALID_INPUT),
        ("TWIN_ERR_TOO_LARGE", capi::TWIN_ERR_TOO_LARGE),
        ("TWIN_ERR_IO", capi::TWIN_ERR_IO),
        ("TWIN_ERR_CORRUPT_FILE", capi::TWIN_ERR_CORRUPT_FILE),
        ("TWIN_ERR_BACKEND", capi::TWIN_ERR_BACKEND),
        ("TWIN_ERR_OVERLOADED", capi::TWIN_ERR_OVERLOADED),
        ("TWIN_ERR_BUFFER_TOO_SMALL", capi::TWIN_ERR_BUFFER_TOO_SMALL),
        ("TWIN_ERR_PANIC", capi::TWIN_ERR_PANIC),
        ("TWIN_ERR_UNSUPPORTED_VERSION", capi::TWIN_ERR_UNSUPPORTED_VERSION),
        ("TWIN_ERR_BACKEND_UNAVAILABLE", capi::TWIN_ERR_BACKEND_UNAVAILABLE),
        ("TWIN_ERR_INTERNAL", capi::TWIN_ERR_INTERNAL),
        ("TWIN_BACKEND_AUTO", capi::TWIN_BACKEND_AUTO),
        ("TWIN_BACKEND_CPU", capi::TWIN_BACKEND_CPU),
        ("TWIN_BACKEND_CUDA", capi::TWIN_BACKEND_CUDA),
        ("TWIN_BACKEND_WGPU", capi::TWIN_BACKEND_WGPU),
        ("TWIN_VARIANT_TWIN_V2", capi::TWIN_VARIANT_TWIN_V2),
        ("TWIN_VARIANT_TWIN", capi::TWIN_VARIANT_TWIN),
        ("TWIN_VARIANT_SIM_SOFT", capi::TWIN_VARIANT_SIM_SOFT),
        ("TWIN_VARIANT_DIN_SHORT", capi::TWIN_VARIANT_DIN_SHORT),
        ("TWIN_VARIANT_NO_SEQ", capi::TWIN_VARIANT_NO_SEQ),
        ("TWIN_DTYPE_F32", capi::TWIN_DTYPE_F32),
        ("TWIN_DTYPE_F16", capi::TWIN_DTYPE_F16),
    ];
    want.extend(consts.iter().map(|(n, v)| format!("{n} {v}")));

    let mut src = String::from("#include <stddef.h>\n#include <stdio.h>\n#include \"twin_engine.h\"\nint main(void) {\n");
    for t in ["twin_behaviour", "twin_request", "twin_engine_options"] {
        src += &format!("    printf(\"sizeof({t}) %zu\\n\", sizeof({t}));\n");
    }
    for line in &want {
        if let Some((t, f)) = line.split_once(' ').and_then(|(tf, _)| tf.split_once('.')) {
            src += &format!("    printf(\"{t}.{f} %zu\\n\", offsetof({t}, {f}));\n");
        }
    }
    for (n, _) in consts {
        src += &format!("    printf(\"{n} %d\\n\", (int){n});\n");
    }
    src += "    return 0;\n}\n";

    let dir = tempfile::tempdir().unwrap();
    let (c, exe) = (dir.path().join("layout.c"), dir.path().join("layout"));
    std::fs::write(&c, &src).unwrap();
    compile(&c, &exe, false);
    let out = run(&mut Command::new(&exe));
    assert!(out.status.success());
    let got: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(got, want);

    // The default options documented in the header are the library's.
    let mut o = std::mem::MaybeUninit::<TwinEngineOptions>::uninit();
    // SAFETY: `o` is valid for one write; the call fills it on success.
    assert_eq!(unsafe { capi::twin_engine_options_default(o.as_mut_ptr()) }, capi::TWIN_OK);
    // SAFETY: initialised by the successful call.
    let o = unsafe { o.assume_init() };
    let header = std::fs::read_to_string(repo().join("include/twin_engine.h")).unwrap();
    for (field, v) in [
        ("max_wait_us", o.max_wait_us),
        ("queue_capacity", o.queue_capacity),
        ("max_batch_requests", o.max_batch_requests),
        ("max_batch_candidates", o.max_batch_candidates),
        ("max_candidates", o.max_candidates),
        ("max_seq_len", o.max_seq_len),
    ] {
        let line = header.lines().find(|l| l.contains(&format!(" {field};"))).unwrap_or_else(|| panic!("no {field} in the header"));
        assert!(line.contains(&format!("default {v}")), "header says `{}`, the default is {v}", line.trim());
    }
    assert_eq!((o.backend, o.variant, o.dtype, o.batching), (capi::TWIN_BACKEND_AUTO, capi::TWIN_VARIANT_TWIN, capi::TWIN_DTYPE_F32, 1));
}

/// C++ services include the header too: it must compile as C++ (extern "C", no C-only syntax).
#[test]
fn header_compiles_as_cpp() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("h.cpp");
    std::fs::write(
        &src,
        "#include \"twin_engine.h\"\nint main() { twin_engine_options o; return twin_engine_options_default(&o) == TWIN_OK ? 0 : 1; }\n",
    )
    .unwrap();
    let mut cmd = Command::new(&cxx);
    cmd.args(["-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only", "-I"]).arg(repo().join("include")).arg(&src);
    match cmd.output() {
        Ok(out) => assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out.stderr)),
        Err(e) => eprintln!("skipping: no C++ compiler `{cxx}` ({e})"),
    }
}
