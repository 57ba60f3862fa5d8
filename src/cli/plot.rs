//! The `twin` binary's charts (line and bar), drawn with the `plotters` crate: each chart is
//! drawn twice from the same code, once as SVG and once as an 800x500 PNG, written side by side
//! under the same stem (`auc.svg` beside `auc.png`).
//!
//! Text is laid out with ab_glyph and DejaVu Sans embedded in the binary
//! (`assets/fonts/DejaVuSans.ttf`, its licence beside it), so a machine without system fonts
//! draws the same PNG; the SVG names the `sans-serif` family and its viewer picks the face.
//! Non-finite points and values are left out of a chart, never an error: a demo whose AUC is NaN
//! for one quartile still gets its plot. Both files are written atomically.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;
/// Tableau-style palette; series and bars take colours in this order, cycling.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
/// Series with at most this many points get a marker on each point.
const MAX_MARKED_POINTS: usize = 50;
const FONT: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// One named polyline of a line chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Registers the embedded font as plotters' `sans-serif` (once per process).
fn register_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS)
            .map_err(|_| "the embedded DejaVu Sans is not a valid font".into())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Line chart: one coloured polyline per series (non-finite points skipped, markers when a series
/// has at most 50 points), axis ticks, title, axis labels and a legend right of the plot.
/// `path` is the PNG; the SVG goes beside it with the same stem.
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let pts: Vec<Vec<(f64, f64)>> =
        series.iter().map(|s| s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect()).collect();
    let (x0, x1) = min_max(pts.iter().flatten().map(|p| p.0));
    let (y0, y1) = min_max(pts.iter().flatten().map(|p| p.1));
    let m = y1 / 20.0 - y0 / 20.0; // 5% headroom so curves do not run along the frame
    let (x, y) = (padded(x0, x1), padded(y0 - m, y1 + m));
    render(path, &LineChart { title, x_label, y_label, series, pts, x, y })
}

/// Bar chart: one bar per (label, value) with the value printed above it; the y axis starts at
/// `y_min` (e.g. 0.5 for AUC) or is chosen automatically (always including 0) when None. A
/// non-finite value gets no bar, only its label. `path` is the PNG; the SVG goes beside it.
pub fn bar_chart(path: &Path, title: &str, y_label: &str, bars: &[(String, f64)], y_min: Option<f64>) -> Result<()> {
    let (vmin, vmax) = min_max(bars.iter().map(|b| b.1));
    let (lo, hi) = match y_min.filter(|m| m.is_finite()) {
        Some(m) => (m, if vmax.is_finite() { vmax.max(m) } else { m }),
        None if vmin.is_finite() => (vmin.min(0.0), vmax.max(0.0)),
        None => (0.0, 1.0),
    };
    // Room above the tallest bar for its value label.
    let y = padded(lo, hi + (hi - lo) * 0.08);
    let y = (lo.max(y.0), y.1);
    render(path, &BarChart { title, y_label, bars, y })
}

/// A chart that can draw itself on any plotters backend (SVG and bitmap).
trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Draws `chart` on an SVG and on a PNG canvas and writes both atomically.
fn render(path: &Path, chart: &impl Chart) -> Result<()> {
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        bail!("chart path {} must end in .png (the SVG is written beside it)", path.display());
    }
    register_font()?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        chart.draw(&root)?;
        root.present().map_err(|e| anyhow!("drawing {}: {e}", path.with_extension("svg").display()))?;
    }
    let svg_path = path.with_extension("svg");
    twin_engine::fileio::write_atomic(&svg_path, svg.as_bytes()).with_context(|| format!("writing {}", svg_path.display()))?;

    // The bitmap backend encodes by file extension, so its temporary file ends in .png too.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp.png", std::process::id()));
    let res = (|| -> Result<()> {
        let root = BitMapBackend::new(&tmp, (WIDTH, HEIGHT)).into_drawing_area();
        chart.draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
        drop(root);
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", path.display())));
    }
    Ok(())
}

/// A plotters error as anyhow (the backends' errors are not all `Send + Sync`).
fn de<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// A line chart's input with its finite points and axis ranges.
struct LineChart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [Series],
    pts: Vec<Vec<(f64, f64)>>,
    x: (f64, f64),
    y: (f64, f64),
}

impl Chart for LineChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let LineChart { title, x_label, y_label, series, ref pts, x, y } = *self;
        root.fill(&WHITE).map_err(de)?;
        let label_font = TextStyle::from((FONT, 14).into_font()).color(&BLACK);
        let names: Vec<String> = series.iter().map(|s| s.name.chars().take(28).collect()).collect();
        let widths: Vec<u32> =
            names.iter().map(|n| root.estimate_text_size(n, &label_font).map(|s| s.0)).collect::<Result<_, _>>().map_err(de)?;
        let legend_w = widths.iter().map(|w| w + 56).max().unwrap_or(0);
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(12)
            .margin_right(12 + legend_w)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)
            .map_err(de)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .axis_desc_style((FONT, 15))
            .label_style((FONT, 13))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(de)?;
        for (i, p) in pts.iter().enumerate() {
            let col = PALETTE[i % PALETTE.len()];
            chart.draw_series(LineSeries::new(p.iter().copied(), col.stroke_width(2))).map_err(de)?;
            if p.len() <= MAX_MARKED_POINTS {
                chart.draw_series(p.iter().map(|&q| Circle::new(q, 3, col.filled()))).map_err(de)?;
            }
        }
        // The legend, right of the plot area: a short line in the series' colour, then its name.
        let (area_x, area_y) = chart.plotting_area().get_pixel_range();
        let lx = area_x.end + 14;
        for (i, name) in names.iter().enumerate() {
            let ly = area_y.start + 8 + i as i32 * 20;
            if ly + 10 > area_y.end {
                break;
            }
            let col = PALETTE[i % PALETTE.len()];
            root.draw(&PathElement::new(vec![(lx, ly), (lx + 26, ly)], col.stroke_width(3))).map_err(de)?;
            root.draw(&Text::new(name.clone(), (lx + 34, ly), label_font.pos(Pos::new(HPos::Left, VPos::Center)))).map_err(de)?;
        }
        Ok(())
    }
}

/// A bar chart's input with its y range.
struct BarChart<'a> {
    title: &'a str,
    y_label: &'a str,
    bars: &'a [(String, f64)],
    y: (f64, f64),
}

impl Chart for BarChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let BarChart { title, y_label, bars, y } = *self;
        root.fill(&WHITE).map_err(de)?;
        // Bar i fills the middle 60% of the slot [i, i + 1); the labels go under the slot centres.
        let n = bars.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..n, y.0..y.1)
            .map_err(de)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_label)
            .y_label_formatter(&|v| fmt_tick(*v))
            .axis_desc_style((FONT, 15))
            .label_style((FONT, 13))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(de)?;
        let style = TextStyle::from((FONT, 13).into_font()).color(&BLACK);
        let base = 0f64.clamp(y.0, y.1);
        for (i, (label, v)) in bars.iter().enumerate() {
            let (x, mut top) = (i as f64, base);
            if v.is_finite() {
                top = v.clamp(y.0, y.1);
                if top != base {
                    let bar = Rectangle::new([(x + 0.2, base), (x + 0.8, top)], PALETTE[i % PALETTE.len()].filled());
                    chart.draw_series(std::iter::once(bar)).map_err(de)?;
                }
            }
            let value = Text::new(fmt_value(*v), (x + 0.5, top.max(base)), style.pos(Pos::new(HPos::Center, VPos::Bottom)));
            chart.draw_series(std::iter::once(value)).map_err(de)?;
            let (px, py) = chart.backend_coord(&(x + 0.5, y.0));
            let label: String = label.chars().take(24).collect();
            root.draw(&Text::new(label, (px, py + 8), style.pos(Pos::new(HPos::Center, VPos::Top)))).map_err(de)?;
        }
        Ok(())
    }
}

/// (min, max) of the finite values; (inf, -inf) when there are none.
fn min_max(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    vals.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
}

/// An axis range covering [lo, hi]: (0, 1) when empty or not finite, padded when zero-width,
/// and kept inside +-1e300 so the axis arithmetic stays finite.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    const LIMIT: f64 = 1e300;
    let (lo, hi) = if lo.is_finite() && hi.is_finite() && lo <= hi { (lo.max(-LIMIT), hi.min(LIMIT)) } else { (0.0, 1.0) };
    if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// An axis tick: the shortest text of `v` rounded to 10 significant digits (so 0.1 + 0.2 shows
/// as 0.3 and 100.0 as 100), in scientific notation when very large or small.
fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if !a.is_finite() || a >= 1e6 || (a < 1e-4 && a > 0.0) {
        return format!("{v:.2e}");
    }
    let r: f64 = format!("{v:.9e}").parse().unwrap_or(v);
    format!("{}", if r == 0.0 { 0.0 } else { r })
}

/// A bar's value label.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points }
    }

    /// The PNG's size from its IHDR, after checking the signature and the closing IEND chunk
    /// (the pixels are checked on the bitmap the PNG is encoded from, see `pixels`).
    fn png_dims(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
        (be(16), be(20))
    }

    /// Draws `chart` into an RGB buffer (the same code path as the PNG, without the encoder).
    fn pixels(chart: &impl Chart) -> Vec<u8> {
        register_font().unwrap();
        let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
            chart.draw(&root).unwrap();
            root.present().unwrap();
        }
        buf
    }

    fn count(rgb: &[u8], c: RGBColor) -> usize {
        rgb.chunks(3).filter(|p| *p == [c.0, c.1, c.2]).count()
    }

    fn check_files(png: &Path, needles: &[&str]) {
        assert_eq!(png_dims(&std::fs::read(png).unwrap()), (WIDTH, HEIGHT));
        let svg = std::fs::read_to_string(png.with_extension("svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..svg.len().min(200)]);
        for n in needles {
            assert!(svg.contains(n), "{n:?} not in the SVG");
        }
        let leftovers: Vec<_> = std::fs::read_dir(png.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn line_chart_writes_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/loss.png");
        let series = [s("twin-v2", vec![(10.0, 0.69), (20.0, 0.6), (30.0, 0.55)]), s("no-seq", vec![(10.0, 0.7), (20.0, 0.68)])];
        line_chart(&path, "Training loss", "step", "BCE loss", &series).unwrap();
        check_files(&path, &["Training loss", "BCE loss", "twin-v2", "no-seq"]);
        // Each series is drawn in its palette colour, and text is drawn (the font is loaded).
        let (pts, x, y) = (series.iter().map(|s| s.points.clone()).collect::<Vec<_>>(), padded(10.0, 30.0), padded(0.5, 0.75));
        let rgb = pixels(&LineChart { title: "Training loss", x_label: "step", y_label: "BCE loss", series: &series, pts, x, y });
        assert!(count(&rgb, PALETTE[0]) > 100 && count(&rgb, PALETTE[1]) > 100);
        assert!(count(&rgb, BLACK) > 200, "no text or axes drawn");
        assert!(line_chart(&dir.path().join("loss.svg"), "t", "x", "y", &series).is_err(), "path must be the .png");
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
            (0..30).map(|i| s(&format!("s{i}"), vec![(0.0, i as f64), (1.0, 1.0)])).collect(),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (k, series) in cases.iter().enumerate() {
            let path = dir.path().join(format!("c{k}.png"));
            line_chart(&path, "Title", "x", "y", series).unwrap_or_else(|e| panic!("case {k}: {e:#}"));
            check_files(&path, &["Title"]);
        }
        let one = &cases[2];
        let (x, y) = (padded(2.0, 2.0), padded(4.75, 5.25));
        let rgb = pixels(&LineChart { title: "T", x_label: "x", y_label: "y", series: one, pts: vec![one[0].points.clone()], x, y });
        assert!(count(&rgb, PALETTE[0]) >= 20, "a single point gets a marker");
    }

    #[test]
    fn bar_chart_draws_each_finite_bar() {
        let dir = tempfile::tempdir().unwrap();
        let bars = vec![("base".to_string(), 0.70), ("twin".to_string(), 0.80), ("nan".to_string(), f64::NAN)];
        let path = dir.path().join("auc.png");
        bar_chart(&path, "AUC per variant", "AUC", &bars, Some(0.5)).unwrap();
        check_files(&path, &["AUC per variant", "base", "twin", "0.8000", "NaN"]);
        let rgb = pixels(&BarChart { title: "AUC", y_label: "auc", bars: &bars, y: (0.5, 0.85) });
        let (a, b) = (count(&rgb, PALETTE[0]), count(&rgb, PALETTE[1]));
        assert!(a > 1000 && b > a, "bars 0.7 and 0.8 above 0.5: {a} {b} pixels");
        assert_eq!(count(&rgb, PALETTE[2]), 0, "NaN bar not drawn");
        let low = pixels(&BarChart { title: "t", y_label: "y", bars: &[("low".into(), 0.2)], y: (0.5, 1.0) });
        assert_eq!(count(&low, PALETTE[0]), 0, "value below y_min");
        let cases = [
            vec![],
            vec![("z".to_string(), 0.0)],
            vec![("neg".to_string(), -3.0), ("pos".to_string(), 2.0)],
            vec![("n".to_string(), f64::NAN)],
        ];
        for (k, b) in cases.iter().enumerate() {
            for y_min in [None, Some(0.5)] {
                let path = dir.path().join(format!("b{k}.png"));
                bar_chart(&path, "t", "y", b, y_min).unwrap_or_else(|e| panic!("case {k} {y_min:?}: {e:#}"));
                check_files(&path, &[]);
            }
        }
    }

    #[test]
    fn ranges_are_padded_and_finite() {
        assert_eq!(padded(f64::INFINITY, f64::NEG_INFINITY), (0.0, 1.0));
        assert_eq!(padded(0.0, 0.0), (-1.0, 1.0));
        assert_eq!(padded(5.0, 5.0), (4.5, 5.5));
        assert_eq!(padded(-1e308, 1e308), (-1e300, 1e300));
        let ticks: Vec<String> = [100.0, 0.1 + 0.2, -0.0, 0.65, 2.5e7, 1e-9].into_iter().map(fmt_tick).collect();
        assert_eq!(ticks, ["100", "0.3", "0", "0.65", "2.50e7", "1.00e-9"]);
        assert_eq!(
            (fmt_value(0.8), fmt_value(3.0), fmt_value(f64::NAN), fmt_value(2e7)),
            ("0.8000".into(), "3".into(), "NaN".into(), "2.000e7".into())
        );
    }
}
