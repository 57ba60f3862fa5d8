//! `copy_rows` (shaders/copy_rows.wgsl) on device tensors: columns of rows of one tensor into
//! another, the row ids bound at their sections of the staged batch.

use super::tensor::bytes;
use super::{grid, WgpuBackend, B};
use crate::backend::cpu::copy_rows::SrcCols;
use crate::backend::{host_tensor, Rows, Staged, Tensor};
use crate::error::Result;

const COPY_SRC: &str = include_str!("../../../shaders/copy_rows.wgsl");
const COPY_BINDS: &[B] = &[B::W, B::R, B::R, B::R];

/// Mirrors `Params` in shaders/copy_rows.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    n: u32,
    width: u32,
    dst_cols: u32,
    dst_col: u32,
    has_dst_ids: u32,
    has_src_ids: u32,
    src_cols: u32,
    src_col: u32,
}

impl WgpuBackend {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_rows_dev(
        &self,
        dst: &Tensor,
        dst_col: usize,
        dst_rows: Rows<'_>,
        src: &Tensor,
        sc: SrcCols,
        src_rows: Rows<'_>,
        staged: &Staged,
        n: usize,
    ) -> Result<()> {
        let lim = self.max_binding();
        if (dst.len() * 4) as u64 > lim || (src.len() * 4) as u64 > lim || (staged.tensor.len() * 4) as u64 > lim {
            return host_tensor::copy_rows_op(self, dst, dst_col, dst_rows, src, sc, src_rows, staged, n);
        }
        if n == 0 || sc.width == 0 {
            return Ok(());
        }
        let (db, sb, ib) = (self.mem(dst)?, self.mem(src)?, self.mem(&staged.tensor)?);
        let ids = |r: Rows<'_>| -> wgpu::BufferBinding<'_> {
            match r {
                Rows::All => ib.as_entire_buffer_binding(),
                Rows::Ids(s) => {
                    let (off, len) = bytes(&s.range);
                    wgpu::BufferBinding { buffer: ib, offset: off, size: wgpu::BufferSize::new(len) }
                }
            }
        };
        let p = CopyParams {
            n: n as u32,
            width: sc.width as u32,
            dst_cols: dst.cols as u32,
            dst_col: dst_col as u32,
            has_dst_ids: matches!(dst_rows, Rows::Ids(_)) as u32,
            has_src_ids: matches!(src_rows, Rows::Ids(_)) as u32,
            src_cols: sc.stride as u32,
            src_col: sc.start as u32,
        };
        self.scoped("copy_rows", || {
            let pipe = self.pipe("copy_rows", COPY_SRC, "copy_rows_fwd", 0, COPY_BINDS)?;
            let pu = self.uniform(&p);
            let mut enc = self.encoder();
            let binds = [db.as_entire_buffer_binding(), ids(dst_rows), sb.as_entire_buffer_binding(), ids(src_rows)];
            self.dispatch_bound(&mut enc, &pipe, &pu, &binds, grid(((n * sc.width) as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }
}
