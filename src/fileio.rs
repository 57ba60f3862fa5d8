//! The container every engine file uses (datasets, models, cluster sets):
//!
//! ```text
//! magic    8 bytes   e.g. b"TWINDATA", b"TWINMODL", b"TWINCLST"
//! version  u32 LE
//! length   u64 LE    bytes of payload
//! payload  `length` bytes, written with `Writer`, read with `Reader`
//! crc32    u32 LE    CRC-32 (IEEE) of magic..payload
//! ```
//! Saving is atomic: the bytes go to a temp file in the same folder, which is fsynced and
//! renamed over the target, so a crash never leaves a half-written file under the real name.
//! Loading checks magic, version, length and checksum before parsing a single field, and the
//! `Reader` bounds-checks every read, so a truncated or corrupt file is an error, never a panic.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const HEADER: usize = 8 + 4 + 8;

/// Little-endian payload builder.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }
    /// Length-prefixed arrays.
    pub fn u8s(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
    pub fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(bytemuck::cast_slice(v));
    }
    pub fn u64s(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(bytemuck::cast_slice(v));
    }
    pub fn i64s(&mut self, v: &[i64]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(bytemuck::cast_slice(v));
    }
    pub fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(bytemuck::cast_slice(v));
    }
}

/// Bounds-checked little-endian payload reader. Every failure names the field being read.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Reader { buf, pos: 0, path }
    }
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(e) => {
                let s = &self.buf[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => {
                Err(Error::corrupt(self.path, format!("{field}: needs {n} bytes at offset {}, payload has {}", self.pos, self.buf.len())))
            }
        }
    }
    pub fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }
    pub fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, field)?.try_into().unwrap_or([0; 4])))
    }
    pub fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, field)?.try_into().unwrap_or([0; 8])))
    }
    pub fn i64(&mut self, field: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8, field)?.try_into().unwrap_or([0; 8])))
    }
    pub fn f32(&mut self, field: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4, field)?.try_into().unwrap_or([0; 4])))
    }
    fn count(&mut self, field: &str, elem: usize) -> Result<usize> {
        let n = self.u64(field)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.checked_mul(elem as u64).map_or(true, |b| b > left) {
            return Err(Error::corrupt(self.path, format!("{field}: claims {n} elements, only {left} bytes left")));
        }
        Ok(n as usize)
    }
    pub fn str(&mut self, field: &str) -> Result<String> {
        let n = self.count(field, 1)?;
        let b = self.take(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::corrupt(self.path, format!("{field}: not UTF-8")))
    }
    pub fn u8s(&mut self, field: &str) -> Result<Vec<u8>> {
        let n = self.count(field, 1)?;
        Ok(self.take(n, field)?.to_vec())
    }
    pub fn u32s(&mut self, field: &str) -> Result<Vec<u32>> {
        let n = self.count(field, 4)?;
        Ok(self.take(n * 4, field)?.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    pub fn u64s(&mut self, field: &str) -> Result<Vec<u64>> {
        let n = self.count(field, 8)?;
        Ok(self.take(n * 8, field)?.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
    }
    pub fn i64s(&mut self, field: &str) -> Result<Vec<i64>> {
        let n = self.count(field, 8)?;
        Ok(self.take(n * 8, field)?.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
    }
    pub fn f32s(&mut self, field: &str) -> Result<Vec<f32>> {
        let n = self.count(field, 4)?;
        Ok(self.take(n * 4, field)?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    /// The payload must be consumed exactly: trailing bytes mean a format mismatch.
    pub fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(Error::corrupt(self.path, format!("{} unexpected trailing bytes", self.buf.len() - self.pos)));
        }
        Ok(())
    }
    pub fn path(&self) -> &Path {
        self.path
    }
}

/// Frame `payload` and write it atomically to `path`.
pub fn save(path: &Path, magic: &[u8; 8], version: u32, payload: &[u8]) -> Result<()> {
    let mut bytes = Vec::with_capacity(HEADER + payload.len() + 4);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    write_atomic(path, &bytes)
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    format!(".{name}.tmp.")
}

/// Remove the temp files that saves of `path` by processes no longer running left behind (a
/// save killed between create and rename). Only on systems with `/proc`, where a process's
/// liveness can be checked; a temp file of a live process is never touched.
fn remove_stale_temps(path: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let (dir, prefix) = (dir_of(path), temp_prefix(path));
    let Ok(entries) = fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Whether `a` and `b` name the same file (through links and `..`), whether or not `b` exists
/// yet. Used to refuse commands that would write an output over one of their inputs.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let canon =
        |p: &Path| -> Option<PathBuf> { p.canonicalize().ok().or_else(|| Some(dir_of(p).canonicalize().ok()?.join(p.file_name()?))) };
    match (canon(a), canon(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Fail now, naming `field`, if `path` could not be saved later: its folder must exist and take
/// a new file (a probe file is created and removed), and `path` must not be a folder.
pub fn check_writable(field: &'static str, path: &Path) -> Result<()> {
    let dir = dir_of(path);
    if path.is_dir() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::IsADirectory, format!("{field} is a folder"))));
    }
    let probe = dir.join(format!("{}probe{}", temp_prefix(path), std::process::id()));
    File::create(&probe).map_err(|e| Error::io(path, std::io::Error::new(e.kind(), format!("{field} cannot be written: {e}"))))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Temp file in the same directory, fsync, rename, fsync the directory. Temp files that killed
/// saves of the same target left behind are removed first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dir_of(path);
    remove_stale_temps(path);
    let tmp = dir.join(format!("{}{}", temp_prefix(path), std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Read and verify a framed file; returns `(version, payload)`. `supported` is the newest
/// version this build reads; older ones are handed back for the caller to upgrade.
pub fn load(path: &Path, magic: &[u8; 8], supported: u32) -> Result<(u32, Vec<u8>)> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < HEADER + 4 {
        return Err(Error::corrupt(path, format!("truncated: {} bytes is shorter than the {}-byte frame", bytes.len(), HEADER + 4)));
    }
    if &bytes[..8] != magic {
        return Err(Error::corrupt(
            path,
            // The file's own bytes are not echoed: the path may name any file the process can read.
            format!("not a {} file (it does not start with that magic)", String::from_utf8_lossy(magic)),
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version == 0 || version > supported {
        return Err(Error::UnsupportedVersion { path: path.into(), found: version, supported });
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or([0; 8]));
    let want = (HEADER as u64).checked_add(len).and_then(|x| x.checked_add(4));
    if want != Some(bytes.len() as u64) {
        return Err(Error::corrupt(path, format!("truncated or padded: header says {len} payload bytes, file has {}", bytes.len())));
    }
    let body = &bytes[..bytes.len() - 4];
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap_or([0; 4]));
    let actual = crc32fast::hash(body);
    if crc != actual {
        return Err(Error::corrupt(path, format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})")));
    }
    Ok((version, body[HEADER..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        let mut w = Writer::new();
        w.str("hello");
        w.f32s(&[1.0, 2.5]);
        w.u32s(&[7, 8, 9]);
        save(&p, b"TESTFILE", 1, &w.buf).unwrap();
        let (v, payload) = load(&p, b"TESTFILE", 1).unwrap();
        assert_eq!(v, 1);
        let mut r = Reader::new(&payload, &p);
        assert_eq!(r.str("s").unwrap(), "hello");
        assert_eq!(r.f32s("f").unwrap(), vec![1.0, 2.5]);
        assert_eq!(r.u32s("u").unwrap(), vec![7, 8, 9]);
        r.finish().unwrap();
        assert!(r.u8("past end").is_err());

        let good = fs::read(&p).unwrap();
        // Every truncation is an error.
        for cut in [0, 5, 19, 24, good.len() - 1] {
            fs::write(&p, &good[..cut]).unwrap();
            assert!(load(&p, b"TESTFILE", 1).is_err(), "cut {cut}");
        }
        // Every single-byte flip is caught.
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x40;
            fs::write(&p, &b).unwrap();
            assert!(load(&p, b"TESTFILE", 1).is_err(), "flip {i}");
        }
        // A newer version is refused by name.
        save(&p, b"TESTFILE", 9, &w.buf).unwrap();
        assert!(matches!(load(&p, b"TESTFILE", 1), Err(Error::UnsupportedVersion { found: 9, .. })));
    }

    /// A killed save's temp file (its process gone) is removed by the next save of the same
    /// target; a live process's temp file and other targets' temps are left alone.
    #[test]
    fn stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.bin");
        let dead = dir.path().join(".model.bin.tmp.4000000000");
        let own = dir.path().join(format!(".model.bin.tmp.{}", std::process::id()));
        let other = dir.path().join(".other.bin.tmp.4000000000");
        for f in [&dead, &other] {
            fs::write(f, b"partial").unwrap();
        }
        // pid 1 (init) is always running.
        let init = dir.path().join(".model.bin.tmp.1");
        fs::write(&init, b"partial").unwrap();
        save(&p, b"TESTFILE", 1, b"payload").unwrap();
        assert!(!dead.exists(), "the dead process's temp file is still there");
        assert!(!own.exists(), "this save's own temp file was left behind");
        assert!(init.exists() && other.exists(), "a live process's or another target's temp file was removed");
        assert_eq!(load(&p, b"TESTFILE", 1).unwrap().1, b"payload");
    }

    #[test]
    fn same_file_and_writable() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        fs::write(&a, b"x").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(same_file(&a, &dir.path().join("sub/../a.bin")));
        assert!(!same_file(&a, &dir.path().join("b.bin")));
        assert!(same_file(&dir.path().join("new.bin"), &dir.path().join("sub/../new.bin")), "a file not yet written");
        check_writable("--out", &dir.path().join("c.bin")).unwrap();
        let missing = dir.path().join("no/such/dir/c.bin");
        let e = check_writable("--out", &missing).unwrap_err().to_string();
        assert!(e.contains("--out cannot be written"), "{e}");
        assert!(check_writable("--out", &dir.path().join("sub")).is_err(), "a folder");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "the probe file was left behind");
    }
}
