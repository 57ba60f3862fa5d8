//! f16 → f32 widening of table rows with F16C (`vcvtph2ps`, 8 halves per instruction) where the
//! CPU has it, detected at run time, so that an f16 table costs half the bytes of an f32 one and
//! almost nothing more to convert. The whole row is converted inside one `target_feature`
//! function (the `half` crate's slice conversion calls a non-inlined function per 8 elements,
//! which cost more than the bytes saved). Exact: every f16 is representable in f32.

use half::f16;

/// `dst[i] = src[i]` widened; `src` and `dst` have the same length.
#[inline]
pub(crate) fn widen(src: &[f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports F16C and AVX (checked just above).
            unsafe { widen_f16c(src, dst) };
            return;
        }
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c,avx")]
unsafe fn widen_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let n = src.len().min(dst.len());
    let n8 = n / 8 * 8;
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 <= n8 <= both lengths, so the unaligned 16-byte load of 8 halves and the
        // 32-byte store of 8 floats stay inside `src` and `dst`.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for j in n8..n {
        dst[j] = src[j].to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_every_half_exactly() {
        // All 65,536 bit patterns (NaNs compared by class), at a length off the 8-lane step.
        let src: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).chain([f16::ONE; 5]).collect();
        let mut dst = vec![f32::NAN; src.len()];
        widen(&src, &mut dst);
        for (s, d) in src.iter().zip(&dst) {
            let want = s.to_f32();
            assert!(want.to_bits() == d.to_bits() || (want.is_nan() && d.is_nan()), "{:#06x}: {d} vs {want}", s.to_bits());
        }
    }
}
