//! copy_rows (the serving network's MLP-input assembly): every backend copies words, so the
//! result must equal the CPU reference bit for bit, including the destination words it must not
//! touch (the destination starts as random words, NaN bit patterns among them). Rows 1, 97, 1025
//! and 100,003, widths 1..130, listed and identity row maps on either side; and the refusals.

use twin_engine::backend::cpu::copy_rows::{copy_rows, SrcCols};
use twin_engine::backend::{Elem, Rows, Staging};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;

struct Case {
    n: usize,
    width: usize,
    dst_rows: usize,
    dst_cols: usize,
    dst_col: usize,
    src_rows: usize,
    list_dst: bool,
    list_src: bool,
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        Case { n: 1, width: 1, dst_rows: 1, dst_cols: 1, dst_col: 0, src_rows: 1, list_dst: false, list_src: false },
        Case { n: 97, width: 3, dst_rows: 97, dst_cols: 10, dst_col: 7, src_rows: 500, list_dst: false, list_src: true },
        Case { n: 1025, width: 130, dst_rows: 3000, dst_cols: 131, dst_col: 1, src_rows: 1025, list_dst: true, list_src: false },
        Case { n: 1025, width: 64, dst_rows: 1100, dst_cols: 408, dst_col: 8, src_rows: 70, list_dst: true, list_src: true },
    ];
    if !small() {
        v.push(Case { n: 100_003, width: 8, dst_rows: 100_003, dst_cols: 408, dst_col: 0, src_rows: 24, list_dst: false, list_src: true });
    }
    v
}

/// `n` distinct rows below `rows` (a destination row is written once).
fn distinct(rng: &mut SplitMix64, n: usize, rows: usize) -> Vec<u32> {
    let mut all: Vec<u32> = (0..rows as u32).collect();
    for i in 0..n {
        let j = i + rng.below((rows - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(n);
    all
}

parity_test!(copy_rows_matches_cpu_bit_for_bit, |gpu, _cpu| {
    for (ci, c) in cases().iter().enumerate() {
        let mut rng = SplitMix64::new(40 + ci as u64);
        let dst0: Vec<u32> = (0..c.dst_rows * c.dst_cols).map(|_| rng.next_u64() as u32).collect();
        let src: Vec<u32> = (0..c.src_rows * c.width).map(|_| rng.next_u64() as u32).collect();
        let di = distinct(&mut rng, c.n, c.dst_rows);
        let si: Vec<u32> = (0..c.n).map(|_| rng.below(c.src_rows as u64) as u32).collect();
        let mut want = dst0.clone();
        let (dl, sl) = (c.list_dst.then_some(&di[..]), c.list_src.then_some(&si[..]));
        copy_rows(&mut want, c.dst_cols, c.dst_col, dl, &src, SrcCols { stride: c.width, start: 0, width: c.width }, sl, c.n);

        let mut st = Staging::new();
        let ds = st.ids("dst ids", &di, c.dst_rows).unwrap();
        let ss = st.ids("src ids", &si, c.src_rows).unwrap();
        let staged = gpu.upload_staging(st).unwrap();
        let dst = gpu.tensor_from("dst", c.dst_rows, c.dst_cols, Elem::U32, &dst0).unwrap();
        let srct = gpu
            .tensor_from(
                "src",
                if c.list_src { c.src_rows } else { c.n },
                c.width,
                Elem::U32,
                &src[..if c.list_src { c.src_rows } else { c.n } * c.width],
            )
            .unwrap();
        let dr = if c.list_dst { Rows::Ids(&ds) } else { Rows::All };
        let sr = if c.list_src { Rows::Ids(&ss) } else { Rows::All };
        gpu.copy_rows(&dst, c.dst_col, dr, &srct, sr, &staged).unwrap();
        let got = gpu.tensor_read(&[&dst]).unwrap().remove(0);
        let what = format!("copy_rows case {ci} (n {}, width {})", c.n, c.width);
        assert_eq!(got.len(), want.len(), "{what}: length");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!("{what}: word {i} (row {}, col {}): got {:#010x}, want {:#010x}", i / c.dst_cols, i % c.dst_cols, got[i], want[i]);
        }
    }
});

parity_test!(copy_rows_refuses_what_could_reach_past_a_tensor, |gpu, _cpu| {
    let dst = gpu.tensor_zeros("dst", 4, 6, Elem::F32).unwrap();
    let src = gpu.tensor_zeros("src", 4, 3, Elem::F32).unwrap();
    let srcu = gpu.tensor_zeros("srcu", 4, 3, Elem::U32).unwrap();
    let mut st = Staging::new();
    let ok = st.ids("ids", &[3, 0, 1, 2], 4).unwrap();
    let wide = st.ids("wide ids", &[0, 9, 1, 2], 10).unwrap();
    // Refused at staging: an id at or past its bound.
    assert!(matches!(st.ids("bad", &[1, 4], 4), Err(Error::OutOfRange { field: "bad", index: 1, value: 4, limit: 4 })));
    let staged = gpu.upload_staging(st).unwrap();
    // Columns past the destination's width.
    let e = gpu.copy_rows(&dst, 4, Rows::All, &src, Rows::All, &staged).unwrap_err();
    assert!(matches!(e, Error::OutOfRange { field: "copy_rows dst_col + src cols", value: 7, limit: 6, .. }), "{e}");
    // Ids staged against 10 rows, used on a 4-row source.
    let e = gpu.copy_rows(&dst, 0, Rows::All, &src, Rows::Ids(&wide), &staged).unwrap_err();
    assert!(matches!(e, Error::OutOfRange { field: "copy_rows src ids", value: 10, limit: 4, .. }), "{e}");
    // Mixed element types.
    assert!(gpu.copy_rows(&dst, 0, Rows::All, &srcu, Rows::All, &staged).is_err());
    // A slot from another upload.
    let other = gpu.upload_staging(Staging::new()).unwrap();
    assert!(gpu.copy_rows(&dst, 0, Rows::All, &src, Rows::Ids(&ok), &other).is_err());
    // The good call works.
    gpu.copy_rows(&dst, 3, Rows::All, &src, Rows::Ids(&ok), &staged).unwrap();
});

// `copy_cols`: a column block of each source row (how the training step cuts the MLP input's
// gradient back into its parts), bit for bit against the reference; a block past the source's
// width is refused.
parity_test!(copy_cols_matches_cpu_bit_for_bit, |gpu, _cpu| {
    for (ci, &(n, stride, start, width, list)) in
        [(1usize, 1usize, 0usize, 1usize, false), (97, 408, 8, 144, false), (1025, 20, 5, 8, true)].iter().enumerate()
    {
        let mut rng = SplitMix64::new(60 + ci as u64);
        let src: Vec<u32> = (0..n * stride).map(|_| rng.next_u64() as u32).collect();
        let dst0: Vec<u32> = (0..n * (width + 3)).map(|_| rng.next_u64() as u32).collect();
        let ids: Vec<u32> = (0..n).map(|_| rng.below(n as u64) as u32).collect();
        let mut want = dst0.clone();
        copy_rows(&mut want, width + 3, 2, None, &src, SrcCols { stride, start, width }, list.then_some(&ids[..]), n);
        let mut st = Staging::new();
        let slot = st.ids("ids", &ids, n).unwrap();
        let staged = gpu.upload_staging(st).unwrap();
        let (dst, srct) =
            (gpu.tensor_from("dst", n, width + 3, Elem::U32, &dst0).unwrap(), gpu.tensor_from("src", n, stride, Elem::U32, &src).unwrap());
        let sr = if list { Rows::Ids(&slot) } else { Rows::All };
        gpu.copy_cols(&dst, 2, Rows::All, &srct, start..start + width, sr, &staged).unwrap();
        assert_eq!(gpu.tensor_read(&[&dst]).unwrap()[0], want, "copy_cols case {ci}");
        assert!(gpu.copy_cols(&dst, 0, Rows::All, &srct, stride - 1..stride + 1, Rows::All, &staged).is_err());
    }
});
