//! `include/twin_engine.h` against `src/capi.rs`: cbindgen (as a library, configured by
//! `cbindgen.toml` with the header's names) generates a header from the Rust side, and the
//! checked-in header must declare exactly the same
//! - functions: name, return type, parameter types and names;
//! - structs: field types and names, in order; opaque types;
//! - constants: name and value (the header's `twin_status`, `twin_backend`, ... enumerators, or
//!   `#define`s, against the Rust `pub const`s).
//!
//! Declarations are compared after normalising whitespace, comments and `struct` tags, not as
//! text: the header keeps its hand-written documentation and its enum type names (C-only
//! conveniences the Rust side has no item for; their enumerators are still compared). On a
//! mismatch the test names every declaration that differs and leaves cbindgen's header at
//! `target/tmp/twin_engine.cbindgen.h` to diff against.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A header's declarations by kind, each `name -> normalised declaration`.
#[derive(Debug, Default, PartialEq)]
struct Decls {
    functions: BTreeMap<String, String>,
    structs: BTreeMap<String, String>,
    opaque: BTreeMap<String, String>,
    constants: BTreeMap<String, String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The header cbindgen writes for src/capi.rs with cbindgen.toml.
fn generated() -> String {
    let config = cbindgen::Config::from_file(repo().join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new().with_config(config).with_src(repo().join("src/capi.rs")).generate().expect("cbindgen");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen writes UTF-8")
}

/// `text` without `/* */` and `//` comments.
fn strip_comments(text: &str) -> String {
    let (mut out, mut rest) = (String::new(), text);
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.map_or(true, |l| b < l) => {
                out.push_str(&rest[..b]);
                let end = rest[b + 2..].find("*/").map_or(rest.len(), |e| b + 2 + e + 2);
                out.push(' ');
                rest = &rest[end..];
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                rest = &rest[rest[l..].find('\n').map_or(rest.len(), |e| l + e)..];
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// One declaration with single spaces, no space next to `*`, `(`, `)` or `,`, and no `struct`
/// tag in front of a type (`const struct twin_x *p` and `const twin_x* p` read the same).
fn normalise(decl: &str) -> String {
    let words: Vec<&str> = decl.split_whitespace().collect();
    let mut s = String::new();
    for (i, w) in words.iter().enumerate() {
        // Drop `struct` tags in parameter and field types, keep the one of `typedef struct`.
        if *w == "struct" && !(i > 0 && words[i - 1] == "typedef") {
            continue;
        }
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(w);
    }
    for p in ["*", "(", ")", ",", "{", "}", ";", "="] {
        s = s.replace(&format!(" {p}"), p).replace(&format!("{p} "), p);
    }
    s
}

/// The declarations of a C header (the subset our headers use: `#define NAME VALUE`, typedef'd
/// enums and structs, opaque struct typedefs, function prototypes). Anything else is an error,
/// so a construct this parser does not know cannot slip through unchecked.
fn parse(header: &str) -> Decls {
    let mut d = Decls::default();
    let mut body = String::new();
    let mut skip_cplusplus = 0;
    for line in strip_comments(header).lines() {
        let t = line.trim();
        // The `extern "C"` wrapper lives in `#ifdef __cplusplus` blocks.
        if t.starts_with("#ifdef __cplusplus") {
            skip_cplusplus += 1;
            continue;
        }
        if skip_cplusplus > 0 {
            skip_cplusplus -= usize::from(t.starts_with("#endif"));
            continue;
        }
        if let Some(def) = t.strip_prefix("#define ") {
            let mut parts = def.splitn(2, char::is_whitespace);
            let (name, value) = (parts.next().unwrap(), parts.next().unwrap_or("").trim());
            if !value.is_empty() {
                d.constants.insert(name.into(), value.into());
            }
        } else if t.starts_with('#') {
            // #ifndef / #include / #endif of the include guard.
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    // Statements end at a ';' outside braces.
    let (mut depth, mut start) = (0i32, 0usize);
    let mut statements = vec![];
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ';' if depth == 0 => {
                statements.push(normalise(&body[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    assert!(normalise(&body[start..]).is_empty(), "text after the last declaration: {:?}", &body[start..]);
    for s in statements {
        let name_after_brace = |s: &str| s[s.rfind('}').unwrap() + 1..].trim().to_string();
        if s.starts_with("typedef enum") {
            let inner = &s[s.find('{').unwrap() + 1..s.rfind('}').unwrap()];
            for e in inner.split(',').filter(|e| !e.is_empty()) {
                let (name, value) = e.split_once('=').unwrap_or_else(|| panic!("enumerator without a value: {e}"));
                d.constants.insert(name.into(), value.into());
            }
        } else if s.starts_with("typedef struct") && s.contains('{') {
            let fields = &s[s.find('{').unwrap() + 1..s.rfind('}').unwrap()];
            d.structs.insert(name_after_brace(&s), fields.to_string());
        } else if let Some(rest) = s.strip_prefix("typedef struct ") {
            let name = rest.split(' ').next_back().unwrap().to_string();
            d.opaque.insert(name, s.clone());
        } else if let Some(open) = s.find('(') {
            let name = s[..open].rsplit(['*', ' ']).next().unwrap().to_string();
            d.functions.insert(name, s.replace("(void)", "()"));
        } else {
            panic!("a declaration this check does not know: {s}");
        }
    }
    d
}

/// Every declaration that differs, one line each (empty when they agree).
fn differences(header: &Decls, rust: &Decls) -> Vec<String> {
    let mut out = vec![];
    let kinds = [
        ("function", &header.functions, &rust.functions),
        ("struct", &header.structs, &rust.structs),
        ("opaque type", &header.opaque, &rust.opaque),
        ("constant", &header.constants, &rust.constants),
    ];
    for (kind, h, r) in kinds {
        for (name, decl) in h {
            match r.get(name) {
                None => out.push(format!("{kind} {name}: in the header, not in src/capi.rs")),
                Some(rd) if rd != decl => out.push(format!("{kind} {name}:\n  header:     {decl}\n  src/capi.rs: {rd}")),
                _ => {}
            }
        }
        for name in r.keys().filter(|n| !h.contains_key(*n)) {
            out.push(format!("{kind} {name}: in src/capi.rs, not in the header"));
        }
    }
    out
}

#[test]
fn header_declares_what_capi_exports() {
    let header_text = std::fs::read_to_string(repo().join("include/twin_engine.h")).unwrap();
    let gen_text = generated();
    let (header, rust) = (parse(&header_text), parse(&gen_text));
    // The comparison has something to compare: every kind is present on the Rust side.
    assert!(rust.functions.len() >= 10 && rust.structs.len() >= 3 && !rust.opaque.is_empty() && rust.constants.len() >= 20, "{rust:#?}");
    let diff = differences(&header, &rust);
    if !diff.is_empty() {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("twin_engine.cbindgen.h");
        std::fs::write(&out, &gen_text).unwrap();
        panic!(
            "include/twin_engine.h and src/capi.rs disagree ({} declarations); cbindgen's header is at {}:\n{}",
            diff.len(),
            out.display(),
            diff.join("\n")
        );
    }
}

/// The check catches each kind of drift: a field's type, a parameter's name, a constant's value,
/// a function missing from the header.
#[test]
fn drift_is_reported() {
    let header_text = std::fs::read_to_string(repo().join("include/twin_engine.h")).unwrap();
    let rust = parse(&generated());
    let edits = [
        ("uint32_t size;", "uint64_t size;", "struct twin_behaviour"),
        ("size_t twin_last_error(char* buf, size_t len);", "size_t twin_last_error(char* buf, size_t n);", "function twin_last_error"),
        ("TWIN_DTYPE_F16 = 1", "TWIN_DTYPE_F16 = 2", "constant TWIN_DTYPE_F16"),
        ("uint64_t twin_engine_n_items(const twin_engine* engine);", "", "function twin_engine_n_items: in src/capi.rs"),
    ];
    for (from, to, needle) in edits {
        assert_eq!(header_text.matches(from).count(), 1, "{from:?} should occur once in the header");
        let diff = differences(&parse(&header_text.replace(from, to)), &rust);
        assert!(diff.len() == 1 && diff[0].starts_with(needle), "{from:?} -> {to:?}: {diff:#?}");
    }
    // Spelling that C reads the same is not drift.
    let same = header_text.replace("const char* twin_version_string(void);", "const char *\n  twin_version_string ( void ) ;");
    assert!(differences(&parse(&same), &rust).is_empty());
}
