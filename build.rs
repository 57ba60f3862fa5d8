//! Build script: does nothing unless the `cuda-emu` feature is on. With it, compiles the CPU
//! emulator of CUDA (emu/runtime.cpp, emu/fibers.cpp, emu/memory.cpp) and every kernels/*.cu
//! (plus the emulator's own test kernels, emu/tests/emu_tests.cu) as C++17 into one static
//! library. See emu/README.md.
//! Each kernel's `#include "X.cuh"` lines (X.cuh a file in kernels/) are replaced by the header's
//! text (as the NVRTC path does in src/backend/cuda/sources.rs), so the scan below sees that code
//! as well.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda-emu")]
    emu::build();
}

#[cfg(feature = "cuda-emu")]
mod emu {
    use std::fmt::Write as _;
    use std::fs;
    use std::path::{Path, PathBuf};

    /// What the scan of one kernel file found, and its text with static `__shared__`
    /// declarations followed by `EMU_SHARED_TOUCH(name);` (the runtime fills each with garbage
    /// at its first use in a block, as uninitialised shared memory would hold).
    struct Scanned {
        text: String,
        kernels: Vec<String>,
        /// `extern __shared__` array names, and whether the name has C language linkage (declared
        /// inside an `extern "C"` kernel: then it is one entity across all files).
        dyn_smem: Vec<(String, bool)>,
    }

    pub fn build() {
        let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
        println!("cargo:rerun-if-changed=emu");
        println!("cargo:rerun-if-changed=kernels");

        let mut sources: Vec<PathBuf> = fs::read_dir(root.join("kernels"))
            .expect("kernels/ is readable")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .collect();
        sources.sort();
        sources.push(root.join("emu/tests/emu_tests.cu"));

        let mut build = cc::Build::new();
        build
            .cpp(true)
            .opt_level(2)
            .flag("-std=c++17")
            // Plain IEEE operations, as the kernels' `_rn` intrinsics and fmad=false promise.
            .flag("-ffp-contract=off")
            // CUDA code reads f16/f32 buffers through uint4/float4; don't let TBAA reorder that.
            .flag("-fno-strict-aliasing")
            // The per-file dynamic shared arrays are `extern thread_local` with no dynamic init.
            .flag("-fno-extern-tls-init")
            // `#pragma unroll` is nvcc's; g++ ignores it.
            .flag("-Wno-unknown-pragmas")
            .define("TWIN_CUDA_EMU", None)
            .include(root.join("emu"))
            .file(root.join("emu/runtime.cpp"))
            .file(root.join("emu/fibers.cpp"))
            .file(root.join("emu/memory.cpp"));

        let mut registry = String::from("#include \"emu_internal.h\"\n");
        let mut tables = Vec::new();
        let mut c_smem: Vec<String> = Vec::new();
        fs::create_dir_all(out.join("emu_src")).unwrap();
        for src in &sources {
            let stem: String =
                src.file_stem().unwrap().to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            let rel = src.strip_prefix(&root).unwrap_or(src).display().to_string();
            let text = expand_includes(&fs::read_to_string(src).expect("kernel source is readable"), &root, &rel);
            let scanned = scan(&text, &rel);
            for (name, c) in &scanned.dyn_smem {
                if *c && !c_smem.contains(name) {
                    c_smem.push(name.clone());
                }
            }
            let copy = out.join("emu_src").join(format!("{stem}.cu"));
            // #line keeps __FILE__/__LINE__ (barrier sites in messages) and g++ errors on the original.
            fs::write(&copy, format!("#line 1 \"{rel}\"\n{}", scanned.text)).unwrap();
            let wrapper = out.join(format!("emu_wrap_{stem}.cpp"));
            fs::write(&wrapper, wrapper_text(&stem, &copy, &scanned)).unwrap();
            build.file(&wrapper);
            writeln!(registry, "extern const ::emu::KernelTable twin_emu_table_{stem};").unwrap();
            tables.push(format!("twin_emu_table_{stem}"));
        }
        for name in &c_smem {
            writeln!(
                registry,
                "extern \"C\" {{ alignas(16) thread_local unsigned char {name}[::emu::kMaxDynSmem + ::emu::kDynSmemGuard]; }}"
            )
            .unwrap();
        }
        write!(
            registry,
            "namespace emu {{\nconst KernelTable* kernel_tables(size_t* n) {{\n    static const KernelTable t[] = {{{}}};\n    \
             *n = sizeof t / sizeof t[0];\n    return t;\n}}\n}}  // namespace emu\n",
            tables.join(", ")
        )
        .unwrap();
        let reg = out.join("emu_registry.cpp");
        fs::write(&reg, registry).unwrap();
        build.file(&reg);
        build.compile("twin_cuda_emu");
    }

    /// `src` (the file `rel`) with each `#include "X.cuh"` line whose kernels/X.cuh exists replaced
    /// by that header's text between `#line` directives: the same expansion as
    /// src/backend/cuda/sources.rs gives NVRTC, done before the scan so that it sees the headers'
    /// code too. Other includes stay (the compiler then names the missing file).
    fn expand_includes(src: &str, root: &Path, rel: &str) -> String {
        let mut out = String::with_capacity(src.len() + 16 * 1024);
        for (i, line) in src.lines().enumerate() {
            let header = line
                .trim()
                .strip_prefix("#include \"")
                .and_then(|r| r.strip_suffix('"'))
                .filter(|n| n.ends_with(".cuh") && !n.contains('/'))
                .map(|n| (n, root.join("kernels").join(n)))
                .filter(|(_, p)| p.is_file());
            if let Some((name, path)) = header {
                let text = fs::read_to_string(&path).expect("kernel header is readable");
                writeln!(out, "#line 1 \"kernels/{name}\"\n{}", text.trim_end()).unwrap();
                writeln!(out, "#line {} \"{rel}\"", i + 2).unwrap();
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn wrapper_text(stem: &str, copy: &Path, s: &Scanned) -> String {
        let ns = format!("twin_emu_k_{stem}");
        let mut w = format!(
            "// Generated by build.rs: {stem}.cu in its own namespace, its dynamic shared memory and registry rows.\n\
             #include \"cuda_emu.h\"\n#include \"emu_internal.h\"\nnamespace {ns} {{\n#include \"{}\"\n}}\n",
            copy.display()
        );
        let smem_fn = match s.dyn_smem.first() {
            Some((name, c_linkage)) => {
                assert!(
                    s.dyn_smem.iter().all(|d| d == &s.dyn_smem[0]),
                    "emu: {stem}.cu declares differently named extern __shared__ arrays {:?}; the emulator gives each \
                     file one dynamic shared array, so use one name",
                    s.dyn_smem
                );
                if *c_linkage {
                    // Defined once, in the generated registry (a C name is one entity program-wide).
                    write!(
                        w,
                        "extern \"C\" thread_local unsigned char {name}[];\nnamespace {ns} {{\n\
                         static unsigned char* emu_dyn_smem() {{ return ::{name}; }}\n}}\n"
                    )
                } else {
                    write!(
                        w,
                        "namespace {ns} {{\nalignas(16) thread_local unsigned char {name}[::emu::kMaxDynSmem + \
                         ::emu::kDynSmemGuard];\nstatic unsigned char* emu_dyn_smem() {{ return {name}; }}\n}}\n"
                    )
                }
                .unwrap();
                format!("&{ns}::emu_dyn_smem")
            }
            None => "nullptr".to_string(),
        };
        let rows: Vec<String> = s.kernels.iter().map(|k| format!("    EMU_KERNEL({ns}, {k}, {smem_fn}),")).collect();
        write!(
            w,
            "namespace {{\nconst ::emu::KernelEntry k_entries[] = {{\n{}\n}};\n}}\n\
             extern const ::emu::KernelTable twin_emu_table_{stem} = {{k_entries, sizeof k_entries / sizeof k_entries[0]}};\n",
            rows.join("\n")
        )
        .unwrap();
        w
    }

    /// Comments, string/char literal contents and preprocessor lines blanked (newlines and byte
    /// offsets kept), so the scan below sees only code.
    fn mask(src: &[u8]) -> Vec<u8> {
        let mut m = src.to_vec();
        let (mut i, n) = (0, src.len());
        let mut line_start = true;
        while i < n {
            let c = src[i];
            if line_start && c == b'#' {
                while i < n && !(src[i] == b'\n' && src[i - 1] != b'\\') {
                    if src[i] != b'\n' {
                        m[i] = b' ';
                    }
                    i += 1;
                }
                continue;
            }
            if c == b'\n' {
                line_start = true;
                i += 1;
                continue;
            }
            if !c.is_ascii_whitespace() {
                line_start = false;
            }
            if c == b'/' && i + 1 < n && src[i + 1] == b'/' {
                while i < n && src[i] != b'\n' {
                    m[i] = b' ';
                    i += 1;
                }
            } else if c == b'/' && i + 1 < n && src[i + 1] == b'*' {
                while i < n && !(src[i] == b'*' && i + 1 < n && src[i + 1] == b'/') {
                    if src[i] != b'\n' {
                        m[i] = b' ';
                    }
                    i += 1;
                }
                for _ in 0..2 {
                    if i < n {
                        m[i] = b' ';
                        i += 1;
                    }
                }
            } else if c == b'"' || c == b'\'' {
                i += 1;
                while i < n && src[i] != c {
                    if src[i] == b'\\' {
                        m[i] = b' ';
                        i += 1;
                    }
                    if i < n && src[i] != b'\n' {
                        m[i] = b' ';
                    }
                    i += 1;
                }
                i += 1;
            } else {
                i += 1;
            }
        }
        m
    }

    fn is_ident(c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'_'
    }

    /// Identifiers of `s` that are not inside (...) or [...]: the declarator names of a
    /// declaration's pieces, the type and attribute words come first.
    fn last_ident_outside_groups(s: &[u8]) -> Option<String> {
        let (mut depth, mut i, mut last) = (0i32, 0, None);
        while i < s.len() {
            match s[i] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                c if depth == 0 && is_ident(c) && !c.is_ascii_digit() => {
                    let st = i;
                    while i < s.len() && is_ident(s[i]) {
                        i += 1;
                    }
                    last = Some(String::from_utf8_lossy(&s[st..i]).into_owned());
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        last
    }

    fn scan(src: &str, rel: &str) -> Scanned {
        let bytes = src.as_bytes();
        let m = mask(bytes);
        let mut kernels = Vec::new();
        let mut dyn_smem = Vec::new();
        let mut inserts: Vec<(usize, String)> = Vec::new();
        let (mut i, mut depth, mut prev_ident) = (0usize, 0i32, String::new());
        // Inside the body of an `extern "C"` kernel (block-scope names there get C linkage).
        let (mut pending_c_fn, mut in_c_fn) = (false, false);
        while i < m.len() {
            let c = m[i];
            if c == b'{' {
                if depth == 0 && pending_c_fn {
                    in_c_fn = true;
                    pending_c_fn = false;
                }
                depth += 1;
            } else if c == b'}' {
                depth -= 1;
                if depth == 0 {
                    in_c_fn = false;
                }
            } else if c == b';' && depth == 0 {
                pending_c_fn = false; // a declaration, not a definition
            }
            if !is_ident(c) || c.is_ascii_digit() {
                i += 1;
                continue;
            }
            let st = i;
            while i < m.len() && is_ident(m[i]) {
                i += 1;
            }
            let word = std::str::from_utf8(&m[st..i]).unwrap().to_string();
            let semi = m[i..].iter().position(|&b| b == b';').map(|p| i + p);
            if word == "__shared__" {
                let Some(semi) = semi else { break };
                let decl = &m[i..semi];
                if prev_ident == "extern" {
                    if let Some(name) = last_ident_outside_groups(decl) {
                        dyn_smem.push((name, in_c_fn));
                    }
                } else if depth == 0 || decl.contains(&b'=') || decl.contains(&b'{') {
                    println!("cargo:warning=emu: {rel}: a static __shared__ declaration at file scope or with an initializer is not garbage-filled");
                } else {
                    // Declarator pieces split at top-level commas; each piece's last identifier
                    // outside brackets/parentheses is its name.
                    let mut touches = String::new();
                    let (mut d, mut from) = (0i32, 0usize);
                    for (k, &b) in decl.iter().chain(std::iter::once(&b',')).enumerate() {
                        match b {
                            b'(' | b'[' => d += 1,
                            b')' | b']' => d -= 1,
                            b',' if d == 0 => {
                                if let Some(name) = last_ident_outside_groups(&decl[from..k]) {
                                    write!(touches, " EMU_SHARED_TOUCH({name});").unwrap();
                                }
                                from = k + 1;
                            }
                            _ => {}
                        }
                    }
                    inserts.push((semi + 1, touches));
                }
            } else if word == "__global__" && src[..st].trim_end().ends_with("extern \"C\"") {
                // Skip `void` and `__launch_bounds__(...)`; the identifier before '(' is the name.
                let mut j = i;
                let mut last = String::new();
                while j < m.len() && m[j] != b'(' {
                    if is_ident(m[j]) {
                        let s0 = j;
                        while j < m.len() && is_ident(m[j]) {
                            j += 1;
                        }
                        last = String::from_utf8_lossy(&m[s0..j]).into_owned();
                        if last == "__launch_bounds__" {
                            let close = m[j..].iter().position(|&b| b == b')').expect("__launch_bounds__(...)");
                            j += close + 1;
                        }
                        continue;
                    }
                    j += 1;
                }
                assert!(!last.is_empty(), "emu: {rel}: cannot find the name of a __global__ function");
                kernels.push(last);
                pending_c_fn = depth == 0;
            }
            prev_ident = word;
        }
        let mut text = src.to_string();
        for (at, s) in inserts.into_iter().rev() {
            text.insert_str(at, &s);
        }
        Scanned { text, kernels, dyn_smem }
    }
}
