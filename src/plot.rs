//! A small, dependency-light PNG chart writer (line and bar charts) for `twin demo`.
//!
//! Charts are drawn into an RGB [`Canvas`] with an embedded 5x7 bitmap font (plus a descender
//! row) and encoded as 8-bit RGB PNG. The zlib stream is one fixed-Huffman deflate block whose
//! only matches repeat the previous pixel (distance 3): mostly-white charts come out at ~30 KB.

use crate::error::{Error, Result};
use std::path::Path;

pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;
/// Tableau-style palette; series and bars take colours in this order, cycling.
pub const PALETTE: [[u8; 3]; 8] =
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75], [227, 119, 194], [23, 190, 207]];
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [225, 225, 225];

/// One named polyline of a line chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Glyphs for ASCII 32..=126: five column bytes, left column in the high byte; bit r of a column
/// is row r (top = bit 0, bit 7 = descender row).
#[rustfmt::skip]
const FONT: [u64; 95] = [
    0x0000000000, 0x00005F0000, 0x0007000700, 0x147F147F14, 0x242A7F2A12, 0x2313086462, 0x3649552250, 0x0005030000, 0x001C224100,
    0x0041221C00, 0x082A1C2A08, 0x08083E0808, 0x0050300000, 0x0808080808, 0x0060600000, 0x2010080402, 0x3E5149453E, 0x00427F4000,
    0x4261514946, 0x2141454B31, 0x1814127F10, 0x2745454539, 0x3C4A494930, 0x0171090503, 0x3649494936, 0x064949291E, 0x0036360000,
    0x0056360000, 0x0814224100, 0x1414141414, 0x0041221408, 0x0201510906, 0x324979413E, 0x7E1111117E, 0x7F49494936, 0x3E41414122,
    0x7F4141221C, 0x7F49494941, 0x7F09090901, 0x3E4149497A, 0x7F0808087F, 0x00417F4100, 0x2040413F01, 0x7F08142241, 0x7F40404040,
    0x7F020C027F, 0x7F0408107F, 0x3E4141413E, 0x7F09090906, 0x3E4151215E, 0x7F09192946, 0x4649494931, 0x01017F0101, 0x3F4040403F,
    0x1F2040201F, 0x3F4038403F, 0x6314081463, 0x0708700807, 0x6151494543, 0x007F414100, 0x0204081020, 0x0041417F00, 0x0402010204,
    0x4040404040, 0x0001020400, 0x2054545478, 0x7F48444438, 0x3844444420, 0x384444487F, 0x3854545418, 0x087E090102, 0x18A4A4A478,
    0x7F08040478, 0x00447D4000, 0x4080847D00, 0x7F10284400, 0x00417F4000, 0x7C04180478, 0x7C08040478, 0x3844444438, 0xFC24242418,
    0x18242424FC, 0x7C08040408, 0x4854545420, 0x043F444020, 0x3C4040207C, 0x1C2040201C, 0x3C4030403C, 0x4428102844, 0x1CA0A0A07C,
    0x4464544C44, 0x0008364100, 0x00007F0000, 0x0041360800, 0x0804081008,
];

/// Inclusive pixel rectangle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

impl Rect {
    pub fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }
}

/// An RGB raster, row-major, 3 bytes a pixel.
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas { width, height, rgb: vec![255; width as usize * height as usize * 3] }
    }

    pub fn bounds(&self) -> Rect {
        Rect { x0: 0, y0: 0, x1: self.width as i64 - 1, y1: self.height as i64 - 1 }
    }

    /// The colour at (x, y), or None outside the canvas.
    pub fn pixel(&self, x: i64, y: i64) -> Option<[u8; 3]> {
        let i = |x: i64, y: i64| (y as usize * self.width as usize + x as usize) * 3;
        self.bounds().contains(x, y).then(|| [self.rgb[i(x, y)], self.rgb[i(x, y) + 1], self.rgb[i(x, y) + 2]])
    }

    /// Set one pixel; coordinates outside the canvas are ignored.
    pub fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if self.bounds().contains(x, y) {
            let i = (y as usize * self.width as usize + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Fill the inclusive rectangle (corners in any order), clipped to the canvas.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        let b = self.bounds();
        for y in y0.min(y1).max(0)..=y0.max(y1).min(b.y1) {
            for x in x0.min(x1).max(0)..=x0.max(x1).min(b.x1) {
                self.set(x, y, c);
            }
        }
    }

    /// A 2-px-wide line between pixel positions `a` and `b`, clipped to `clip`; skipped when an end is not finite.
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), c: [u8; 3], clip: Rect) {
        let bd = self.bounds();
        let clip = Rect { x0: clip.x0.max(0), y0: clip.y0.max(0), x1: clip.x1.min(bd.x1), y1: clip.y1.min(bd.y1) };
        let Some((a, b)) = clip_segment(a, b, &clip) else { return };
        let n = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0);
        for k in 0..=n as i64 {
            let t = k as f64 / n;
            let (x, y) = ((a.0 + t * (b.0 - a.0)).round() as i64, (a.1 + t * (b.1 - a.1)).round() as i64);
            for (x, y) in [(x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1)] {
                if clip.contains(x, y) {
                    self.set(x, y, c);
                }
            }
        }
    }

    /// Draw `s` with its top-left at (x, y), each font pixel `scale` px square. With `vertical`
    /// the text is rotated 90 degrees counter-clockwise and (x, y) is its bottom-left corner.
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: [u8; 3], vertical: bool) {
        for (k, ch) in s.chars().enumerate() {
            let code = if (32..=126).contains(&(ch as u32)) { ch as usize } else { '?' as usize };
            for col in 0..5 {
                let bits = FONT[code - 32] >> (8 * (4 - col)) & 0xFF;
                for row in (0..8).filter(|r| bits >> r & 1 == 1) {
                    let (u, v) = ((k as i64 * 6 + col) * scale, row * scale);
                    let (px, py) = if vertical { (x + v, y - u - scale + 1) } else { (x + u, y + v) };
                    self.fill_rect(px, py, px + scale - 1, py + scale - 1, c);
                }
            }
        }
    }

    /// Encode as an 8-bit RGB PNG (filter type 0 on every row).
    pub fn encode_png(&self) -> Vec<u8> {
        let stride = self.width as usize * 3;
        let mut raw = Vec::with_capacity((stride + 1) * self.height as usize);
        for row in self.rgb.chunks(stride.max(1)).take(self.height as usize) {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let mut ihdr = [0u8; 13];
        ihdr[..4].copy_from_slice(&self.width.to_be_bytes());
        ihdr[4..8].copy_from_slice(&self.height.to_be_bytes());
        ihdr[8..].copy_from_slice(&[8, 2, 0, 0, 0]); // 8-bit truecolour, deflate, adaptive filtering, no interlace
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [(b"IHDR", &ihdr[..]), (b"IDAT", &zlib(&raw)), (b"IEND", &[])] {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let crc = crc32fast::hash(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        out
    }

    /// Write the PNG to `path` atomically, creating the parent directory if needed.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::fileio::write_atomic(path, &self.encode_png())
    }
}

/// Pixel width of `s` at `scale`.
pub fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 6 * scale
}

fn truncate(s: &str, max_chars: i64) -> String {
    s.chars().take(max_chars.max(0) as usize).collect()
}

/// Liang-Barsky clipping of a segment to a rectangle.
fn clip_segment(a: (f64, f64), b: (f64, f64), r: &Rect) -> Option<((f64, f64), (f64, f64))> {
    if ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
        return None;
    }
    let (dx, dy, mut t0, mut t1) = (b.0 - a.0, b.1 - a.1, 0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0 - r.x0 as f64), (dx, r.x1 as f64 - a.0), (-dy, a.1 - r.y0 as f64), (dy, r.y1 as f64 - a.1)] {
        match p {
            _ if p == 0.0 && q < 0.0 => return None,
            _ if p < 0.0 => t0 = t0.max(q / p),
            _ if p > 0.0 => t1 = t1.min(q / p),
            _ => {}
        }
    }
    (t0 <= t1).then_some(((a.0 + t0 * dx, a.1 + t0 * dy), (a.0 + t1 * dx, a.1 + t1 * dy)))
}

const LEN_BASE: [u32; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA: [u32; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];

/// zlib stream of one fixed-Huffman deflate block (RFC 1951 3.2.6); matches only at distance 3.
fn zlib(data: &[u8]) -> Vec<u8> {
    // (value, bit count) pieces, sent LSB first; Huffman codes are bit-reversed so they read MSB first.
    let code = |c: u32, len: u32| (c.reverse_bits() >> (32 - len), len);
    let sym = |s: u32| match s {
        0..=143 => code(0x30 + s, 8),
        144..=255 => code(0x190 + s - 144, 9),
        256..=279 => code(s - 256, 7),
        _ => code(0xC0 + s - 280, 8),
    };
    let (mut bits, mut i) = (vec![(0b011, 3)], 0); // BFINAL = 1, BTYPE = 01 (fixed Huffman)
    while i < data.len() {
        let len = if i < 3 { 0 } else { (0..258).take_while(|&k| i + k < data.len() && data[i + k] == data[i + k - 3]).count() };
        if len >= 3 {
            let k = LEN_BASE.iter().rposition(|&b| b as usize <= len).unwrap_or(0);
            bits.extend([sym(257 + k as u32), (len as u32 - LEN_BASE[k], LEN_EXTRA[k]), code(2, 5)]); // distance code 2 = 3 bytes
            i += len;
        } else {
            bits.push(sym(data[i] as u32));
            i += 1;
        }
    }
    bits.extend([sym(256), (0, 7)]); // end of block, then pad out the last byte
    let (mut out, mut acc, mut n) = (vec![0x78u8, 0x01], 0u64, 0u32);
    for (value, count) in bits {
        acc |= (value as u64) << n;
        n += count;
        while n >= 8 {
            out.push(acc as u8);
            (acc, n) = (acc >> 8, n - 8);
        }
    }
    let (a, b) = data.iter().fold((1u32, 0u32), |(a, b), &x| ((a + x as u32) % 65521, (b + (a + x as u32) % 65521) % 65521));
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// A "nice" axis range covering [min, max] with about five ticks: (lo, hi, step). Empty,
/// reversed, non-finite or zero-width input is padded so the span is never zero.
pub fn nice_range(min: f64, max: f64) -> (f64, f64, f64) {
    let (mut lo, mut hi) = if min.is_finite() && max.is_finite() && min <= max { (min, max) } else { (0.0, 1.0) };
    if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()) {
        let pad = if lo == 0.0 { 1.0 } else { (lo.abs() * 0.1).min(f64::MAX / 4.0) };
        (lo, hi) = (lo - pad, hi + pad);
    }
    let raw = (hi / 5.0 - lo / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|&s| s >= raw).unwrap_or(10.0 * mag);
    let (nlo, nhi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    if nlo.is_finite() && nhi.is_finite() && step.is_finite() && step > 0.0 {
        (nlo, nhi, step)
    } else {
        (lo, hi, raw)
    }
}

/// Tick values in [lo, hi] at multiples of `step` (at most 40).
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil();
    let vals = (0..40).map(|k| (first + k as f64) * step).take_while(|&t| t <= hi + step * 1e-9);
    vals.map(|t| if t.abs() < step * 1e-9 { 0.0 } else { t }).collect()
}

/// A tick label with as many decimals as `step` needs.
fn fmt_tick(v: f64, step: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-4) {
        return format!("{v:.2e}");
    }
    let d = (-step.log10().floor()).clamp(0.0, 6.0) as usize;
    let d = if (v * 10f64.powi(d as i32)).fract().abs() > 1e-6 { (d + 1).min(6) } else { d };
    format!("{v:.d$}")
}

fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a.is_finite() && (a >= 1e6 || (a < 1e-3 && a > 0.0)) {
        format!("{v:.3e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// The plot area and the data ranges it shows.
struct Axes {
    r: Rect,
    x: (f64, f64),
    y: (f64, f64),
}

impl Axes {
    fn px(&self, x: f64) -> f64 {
        self.r.x0 as f64 + (x - self.x.0) / (self.x.1 - self.x.0) * (self.r.x1 - self.r.x0) as f64
    }
    fn py(&self, y: f64) -> f64 {
        self.r.y1 as f64 - (y - self.y.0) / (self.y.1 - self.y.0) * (self.r.y1 - self.r.y0) as f64
    }
}

const PLOT: Rect = Rect { x0: 80, y0: 44, x1: WIDTH as i64 - 20, y1: HEIGHT as i64 - 50 };

/// Title, grid, ticks with labels, axis lines and axis labels (no x ticks when `x_step` is None).
fn frame(c: &mut Canvas, ax: &Axes, title: &str, x_label: &str, y_label: &str, y_step: f64, x_step: Option<f64>) {
    let (w, h, r) = (c.width as i64, c.height as i64, ax.r);
    let title = truncate(title, (w - 20) / 12);
    c.text((w - text_width(&title, 2)) / 2, 10, &title, 2, BLACK, false);
    for t in ticks(ax.y.0, ax.y.1, y_step) {
        let (y, s) = (ax.py(t).round() as i64, fmt_tick(t, y_step));
        c.fill_rect(r.x0 + 1, y, r.x1, y, GRID);
        c.fill_rect(r.x0 - 5, y, r.x0 - 1, y, BLACK);
        c.text(r.x0 - 8 - text_width(&s, 1), y - 3, &s, 1, BLACK, false);
    }
    for (t, step) in x_step.into_iter().flat_map(|s| ticks(ax.x.0, ax.x.1, s).into_iter().map(move |t| (t, s))) {
        let (x, s) = (ax.px(t).round() as i64, fmt_tick(t, step));
        c.fill_rect(x, r.y0, x, r.y1 - 1, GRID);
        c.fill_rect(x, r.y1 + 1, x, r.y1 + 5, BLACK);
        c.text(x - text_width(&s, 1) / 2, r.y1 + 9, &s, 1, BLACK, false);
    }
    c.fill_rect(r.x0, r.y0, r.x0, r.y1, BLACK);
    c.fill_rect(r.x0, r.y1, r.x1, r.y1, BLACK);
    let xl = truncate(x_label, (r.x1 - r.x0) / 6);
    c.text((r.x0 + r.x1 - text_width(&xl, 1)) / 2, h - 16, &xl, 1, BLACK, false);
    let yl = truncate(y_label, (r.y1 - r.y0) / 6);
    c.text(8, (r.y0 + r.y1 + text_width(&yl, 1)) / 2, &yl, 1, BLACK, true);
}

fn min_max(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    vals.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
}

/// Render a line chart (see [`line_chart`]) without writing it.
pub fn render_line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Canvas {
    let mut c = Canvas::new(WIDTH, HEIGHT);
    let pts: Vec<Vec<(f64, f64)>> =
        series.iter().map(|s| s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect()).collect();
    let ((x0, x1), (y0, y1)) = (min_max(pts.iter().flatten().map(|p| p.0)), min_max(pts.iter().flatten().map(|p| p.1)));
    let m = y1 / 20.0 - y0 / 20.0; // 5% headroom so curves do not run along the frame
    let ((xlo, xhi, xstep), (ylo, yhi, ystep)) = (nice_range(x0, x1), nice_range(y0 - m, y1 + m));
    let names: Vec<String> = series.iter().map(|s| truncate(&s.name, 24)).collect();
    let legend_w = names.iter().map(|n| text_width(n, 1) + 36).max().unwrap_or(0);
    let r = Rect { x1: PLOT.x1 - legend_w, ..PLOT };
    let ax = Axes { r, x: (xlo, xhi), y: (ylo, yhi) };
    frame(&mut c, &ax, title, x_label, y_label, ystep, Some(xstep));
    for (i, p) in pts.iter().enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        let xy: Vec<(f64, f64)> = p.iter().map(|&(x, y)| (ax.px(x), ax.py(y))).collect();
        xy.windows(2).for_each(|s| c.line(s[0], s[1], col, r));
        for &(x, y) in xy.iter().filter(|_| xy.len() <= 50) {
            let (x, y) = (x.round() as i64, y.round() as i64);
            if r.contains(x, y) {
                c.fill_rect((x - 2).max(r.x0), (y - 2).max(r.y0), (x + 2).min(r.x1), (y + 2).min(r.y1), col);
            }
        }
        let ly = r.y0 + 4 + i as i64 * 14;
        if ly + 8 <= r.y1 {
            c.fill_rect(r.x1 + 12, ly + 2, r.x1 + 28, ly + 4, col);
            c.text(r.x1 + 34, ly, &names[i], 1, BLACK, false);
        }
    }
    c
}

/// Line chart: one coloured polyline per series (non-finite points skipped, markers when a series
/// has at most 50 points), nice axis ticks, title, axis labels and a legend; an 800x500 PNG.
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    render_line_chart(title, x_label, y_label, series).save(path)
}

/// Render a bar chart (see [`bar_chart`]) without writing it.
pub fn render_bar_chart(title: &str, y_label: &str, bars: &[(String, f64)], y_min: Option<f64>) -> Canvas {
    let mut c = Canvas::new(WIDTH, HEIGHT);
    let (vmin, vmax) = min_max(bars.iter().map(|b| b.1));
    let (ylo, yhi, ystep) = match y_min.filter(|m| m.is_finite()) {
        Some(m) => {
            let (_, hi, step) = nice_range(m, vmax.max(m));
            (m, hi, step)
        }
        None => nice_range(vmin.min(0.0), vmax.max(0.0)),
    };
    let (r, base) = (PLOT, 0f64.clamp(ylo, yhi));
    let ax = Axes { r, x: (0.0, 1.0), y: (ylo, yhi) };
    frame(&mut c, &ax, title, "", y_label, ystep, None);
    let slot = (r.x1 - r.x0) as f64 / bars.len().max(1) as f64;
    for (i, (label, v)) in bars.iter().enumerate() {
        let (cx, half) = (r.x0 as f64 + slot * (i as f64 + 0.5), (slot * 0.3).max(0.5));
        let (xa, xb) = ((cx - half).round() as i64, (cx + half).round() as i64 - 1);
        let mut top = r.y1;
        if v.is_finite() {
            let (ya, yb) = (ax.py(base).round() as i64, ax.py(v.clamp(ylo, yhi)).round() as i64);
            top = ya.min(yb).max(r.y0);
            if ya != yb {
                c.fill_rect(xa.max(r.x0 + 1), top, xb.max(xa).min(r.x1), ya.max(yb).min(r.y1 - 1), PALETTE[i % PALETTE.len()]);
            }
        }
        let s = fmt_value(*v);
        c.text(cx as i64 - text_width(&s, 1) / 2, (top - 11).max(r.y0 - 12), &s, 1, BLACK, false);
        let l = truncate(label, (slot as i64 - 4) / 6);
        c.text(cx as i64 - text_width(&l, 1) / 2, r.y1 + 8, &l, 1, BLACK, false);
    }
    c
}

/// Bar chart: one bar per (label, value) with the value printed above it; the y axis starts at
/// `y_min` (e.g. 0.5 for AUC) or is chosen automatically (always including 0) when None.
pub fn bar_chart(path: &Path, title: &str, y_label: &str, bars: &[(String, f64)], y_min: Option<f64>) -> Result<()> {
    render_bar_chart(title, y_label, bars, y_min).save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Check the signature, every chunk CRC, IHDR, zlib header and Adler-32, inflate the
    /// fixed-Huffman stream (all `zlib` writes) and unfilter: the pixels the PNG really holds.
    fn decode(png: &[u8]) -> Canvas {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (mut at, mut ihdr, mut z) = (8, vec![], vec![]);
        while at < png.len() {
            let len = be32(&png[at..]) as usize;
            let body = &png[at + 4..at + 8 + len];
            assert_eq!(be32(&png[at + 8 + len..]), crc32fast::hash(body), "chunk CRC");
            match &body[..4] {
                b"IHDR" => ihdr = body[4..].to_vec(),
                b"IDAT" => z.extend_from_slice(&body[4..]),
                _ => {}
            }
            at += 12 + len;
        }
        assert_eq!((&png[png.len() - 8..png.len() - 4], &ihdr[8..]), (&b"IEND"[..], &[8u8, 2, 0, 0, 0][..]));
        assert_eq!((z[0] as u32 * 256 + z[1] as u32) % 31, 0, "zlib header");
        let mut pos = 16;
        let mut bits = |n: u32, msb_first: bool| {
            (0..n).fold(0u32, |acc, k| {
                let b = (z[pos / 8] >> (pos % 8)) as u32 & 1;
                pos += 1;
                if msb_first {
                    acc << 1 | b
                } else {
                    acc | b << k
                }
            })
        };
        assert_eq!(bits(3, false), 0b011, "one final fixed-Huffman block");
        let mut raw: Vec<u8> = vec![];
        loop {
            let c7 = bits(7, true);
            let sym = match c7 {
                0..=23 => 256 + c7,
                _ => match c7 << 1 | bits(1, true) {
                    c8 @ 0x30..=0xBF => c8 - 0x30,
                    c8 @ 0xC0..=0xC7 => 280 + c8 - 0xC0,
                    c8 => 144 + (c8 << 1 | bits(1, true)) - 0x190,
                },
            };
            match sym {
                0..=255 => raw.push(sym as u8),
                256 => break,
                _ => {
                    let k = (sym - 257) as usize;
                    let len = LEN_BASE[k] + bits(LEN_EXTRA[k], false);
                    let d = bits(5, true);
                    assert!(d < 4, "distance code {d} has extra bits this decoder lacks");
                    (0..len).for_each(|_| raw.push(raw[raw.len() - d as usize - 1]));
                }
            }
        }
        let (a, b) = raw.iter().fold((1u32, 0u32), |(a, b), &x| ((a + x as u32) % 65521, (b + (a + x as u32) % 65521) % 65521));
        assert_eq!(be32(&z[z.len() - 4..]), (b << 16) | a, "adler32");
        let (w, h) = (be32(&ihdr[0..]), be32(&ihdr[4..]));
        assert_eq!(raw.len(), (w as usize * 3 + 1) * h as usize);
        let rows = raw.chunks(w as usize * 3 + 1);
        Canvas {
            width: w,
            height: h,
            rgb: rows.flat_map(|r| if r[0] == 0 { &r[1..] } else { panic!("filter {}", r[0]) }).copied().collect(),
        }
    }

    fn count(c: &Canvas, col: [u8; 3]) -> usize {
        c.rgb.chunks(3).filter(|p| *p == col).count()
    }

    fn s(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points }
    }

    #[test]
    fn png_round_trips_through_decoder() {
        let mut c = Canvas::new(37, 11);
        c.fill_rect(3, 2, 20, 8, PALETTE[2]);
        c.text(1, 1, "Hi g!", 1, BLACK, false);
        c.set(36, 10, [1, 2, 3]);
        let d = decode(&c.encode_png());
        assert_eq!((d.width, d.height, d.rgb), (37, 11, c.rgb));
        let chart = render_line_chart("t", "x", "y", &[s("a", vec![(0.0, 1.0), (1.0, 3.0)])]);
        let png = chart.encode_png();
        assert!(png.len() < 100_000, "compressed size {}", png.len());
        assert_eq!(decode(&png).rgb, chart.rgb);
    }

    #[test]
    fn line_chart_survives_degenerate_input() {
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let cases = [
            vec![],
            vec![s("empty", vec![])],
            vec![s("one", vec![(2.0, 5.0)])],
            vec![s("flat", vec![(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)])],
            vec![s("nan", vec![(nan, 1.0), (1.0, nan), (inf, 2.0), (-inf, -inf)])],
            vec![
                s("mixed", vec![(0.0, 1.0), (1.0, nan), (2.0, 3.0), (3.0, -1e300), (4.0, 1e300)]),
                s("é long name ".repeat(9).as_str(), vec![]),
            ],
        ];
        for series in &cases {
            let c = render_line_chart("Title", "x", "y", series);
            assert_eq!((c.width, c.height, c.rgb.len()), (WIDTH, HEIGHT, (WIDTH * HEIGHT * 3) as usize));
        }
        assert!(count(&render_line_chart("T", "x", "y", &cases[2]), PALETTE[0]) >= 25, "a single point gets a marker");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/line.png");
        line_chart(&path, "Loss", "step", "loss", &cases[5]).unwrap();
        assert_eq!(decode(&std::fs::read(&path).unwrap()).rgb, render_line_chart("Loss", "step", "loss", &cases[5]).rgb);
    }

    #[test]
    fn lines_are_clipped() {
        let mut c = Canvas::new(50, 50);
        let clip = Rect { x0: 10, y0: 10, x1: 30, y1: 30 };
        c.line((-100.0, 20.0), (100.0, 20.0), PALETTE[3], clip);
        c.line((f64::NAN, 0.0), (5.0, 5.0), PALETTE[3], clip);
        c.line((0.0, 0.0), (1e300, 1e300), PALETTE[3], Rect { x0: -5, y0: -5, x1: i64::MAX, y1: i64::MAX });
        for (x, y) in (0..50).flat_map(|x| (0..50).map(move |y| (x, y))) {
            let want = (clip.contains(x, y) && (y == 20 || y == 21)) || (x - y).abs() <= 1;
            assert_eq!(c.pixel(x, y) == Some(PALETTE[3]), want, "({x},{y})");
        }
    }

    #[test]
    fn bar_chart_bars_have_palette_colours() {
        let bars = [("base".to_string(), 0.70), ("twin".to_string(), 0.80), ("nan".to_string(), f64::NAN)];
        let c = render_bar_chart("AUC", "auc", &bars, Some(0.5));
        let (ylo, yhi, r) = (0.5, nice_range(0.5, 0.8).1, PLOT);
        let slot = (r.x1 - r.x0) as f64 / 3.0;
        for (i, v) in [0.70, 0.80].into_iter().enumerate() {
            let cx = (r.x0 as f64 + slot * (i as f64 + 0.5)) as i64;
            let top = (r.y1 as f64 - (v - ylo) / (yhi - ylo) * (r.y1 - r.y0) as f64) as i64;
            assert_eq!(c.pixel(cx, (top + r.y1) / 2), Some(PALETTE[i]), "bar {i} middle");
            assert_eq!(c.pixel(cx, r.y1 - 2), Some(PALETTE[i]), "bar {i} bottom");
            assert_ne!(c.pixel(cx, top - 3), Some(PALETTE[i]), "bar {i} ends at its value");
            assert_eq!(c.pixel(cx + (slot * 0.45) as i64, (top + r.y1) / 2), Some([255; 3]), "gap between bars");
        }
        assert_eq!(count(&c, PALETTE[2]), 0, "NaN bar not drawn");
        assert_eq!(count(&render_bar_chart("t", "y", &[("low".into(), 0.2)], Some(0.5)), PALETTE[0]), 0, "value below y_min");
        for b in [vec![], vec![("z".to_string(), 0.0)], vec![("neg".to_string(), -3.0), ("pos".to_string(), 2.0)]] {
            assert_eq!(render_bar_chart("t", "y", &b, None).rgb.len(), (WIDTH * HEIGHT * 3) as usize);
        }
    }

    #[test]
    fn nice_ranges_are_padded_and_cover_data() {
        for (a, b) in [(0.0, 0.0), (5.0, 5.0), (f64::INFINITY, f64::NEG_INFINITY), (0.61, 0.79), (-1e300, 1e300), (1e-12, 2e-12)] {
            let (lo, hi, step) = nice_range(a, b);
            assert!(lo < hi && step > 0.0 && step.is_finite(), "{a} {b} -> {lo} {hi} {step}");
            assert!(!(a.is_finite() && a <= b) || (lo <= a && hi >= b));
            assert!(!ticks(lo, hi, step).is_empty());
        }
        let (lo, hi, step) = nice_range(0.61, 0.79);
        assert!((lo - 0.6).abs() < 1e-12 && (hi - 0.8).abs() < 1e-12 && (step - 0.05).abs() < 1e-12);
        assert_eq!((fmt_tick(0.65, 0.05), fmt_tick(2.5, 2.5), fmt_tick(400.0, 200.0)), ("0.65".into(), "2.5".into(), "400".into()));
    }
}
