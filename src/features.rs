//! Feature bucketing shared by data, model and the online path (SPEC §1-2). Every bucket
//! function is total: any finite or non-finite input lands in a valid bucket.

/// Cross features (`J = 3`): completion-ratio bucket, play-time bucket, time-gap bucket.
pub const N_CROSS: usize = 3;
/// Vocabulary sizes of the cross features, in order.
pub const CROSS_VOCAB: [usize; N_CROSS] = [COMPLETION_BUCKETS, PLAY_TIME_BUCKETS, TIME_GAP_BUCKETS];
pub const COMPLETION_BUCKETS: usize = 10;
/// `0` for < 1 s, then `1 + ⌊log2 s⌋`, capped.
pub const PLAY_TIME_BUCKETS: usize = 24;
/// `0` for a gap < 1 s, then `1 + ⌊log2 gap⌋`, capped (2^39 s covers any real history).
pub const TIME_GAP_BUCKETS: usize = 40;
/// Item duration buckets (an inherent feature): log2 seconds, like play time.
pub const DURATION_BUCKETS: usize = 24;

/// `p = clamp(play_time / duration, 0, 1)`; a non-positive duration gives 0.
#[inline]
pub fn completion_ratio(play_time: f32, duration: f32) -> f32 {
    if !(duration > 0.0) || !play_time.is_finite() {
        return 0.0;
    }
    (play_time / duration).clamp(0.0, 1.0)
}

#[inline]
pub fn completion_bucket(p: f32) -> u32 {
    if !(p > 0.0) {
        return 0;
    }
    ((p * COMPLETION_BUCKETS as f32) as usize).min(COMPLETION_BUCKETS - 1) as u32
}

#[inline]
fn log2_bucket(x: f64, n: usize) -> u32 {
    if !(x >= 1.0) {
        return 0;
    }
    if !x.is_finite() {
        return (n - 1) as u32;
    }
    (1 + x.log2().floor() as usize).min(n - 1) as u32
}

#[inline]
pub fn play_time_bucket(seconds: f32) -> u32 {
    log2_bucket(seconds as f64, PLAY_TIME_BUCKETS)
}

#[inline]
pub fn duration_bucket(seconds: f32) -> u32 {
    log2_bucket(seconds as f64, DURATION_BUCKETS)
}

/// `gap = request time - behaviour time` in seconds.
#[inline]
pub fn time_gap_bucket(gap_seconds: i64) -> u32 {
    log2_bucket(gap_seconds as f64, TIME_GAP_BUCKETS)
}

/// `[J + 1]` row offsets of each cross feature's vocabulary in the stacked cross tables.
pub fn cross_offsets() -> Vec<u32> {
    let mut o = vec![0u32];
    for v in CROSS_VOCAB {
        o.push(o.last().copied().unwrap_or(0) + v as u32);
    }
    o
}

/// Stacked cross-table rows of one behaviour seen at `request_time`.
#[inline]
pub fn cross_rows(play_time: f32, duration: f32, timestamp: i64, request_time: i64) -> [u32; N_CROSS] {
    cross_rows_from_ratio(completion_ratio(play_time, duration), play_time, timestamp, request_time)
}

/// Same, from an already computed completion ratio (virtual items carry an averaged one).
#[inline]
pub fn cross_rows_from_ratio(p: f32, play_time: f32, timestamp: i64, request_time: i64) -> [u32; N_CROSS] {
    let o = [0u32, CROSS_VOCAB[0] as u32, (CROSS_VOCAB[0] + CROSS_VOCAB[1]) as u32];
    [o[0] + completion_bucket(p), o[1] + play_time_bucket(play_time), o[2] + time_gap_bucket(request_time.saturating_sub(timestamp))]
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn buckets_are_total_and_in_range() {
        for &x in &[f32::NAN, f32::NEG_INFINITY, -5.0, 0.0, 0.5, 1.0, 1.5, 3.0, 1e9, f32::INFINITY] {
            assert!((completion_bucket(x) as usize) < COMPLETION_BUCKETS);
            assert!((play_time_bucket(x) as usize) < PLAY_TIME_BUCKETS);
            assert!((duration_bucket(x) as usize) < DURATION_BUCKETS);
        }
        for &g in &[i64::MIN, -1, 0, 1, 2, 1 << 40, i64::MAX] {
            assert!((time_gap_bucket(g) as usize) < TIME_GAP_BUCKETS);
        }
        assert_eq!(completion_bucket(1.0), 9);
        assert_eq!(completion_bucket(0.95), 9);
        assert_eq!(completion_bucket(0.1), 1);
        assert_eq!(play_time_bucket(1.0), 1);
        assert_eq!(play_time_bucket(2.0), 2);
        assert_eq!(play_time_bucket(3.9), 2);
        let o = cross_offsets();
        assert_eq!(o, vec![0, 10, 34, 74]);
        let r = cross_rows(30.0, 60.0, 100, 100 + 4096);
        assert_eq!(r, [5, 10 + 5, 34 + 13]);
    }
}

/// Hour of day (UTC) of a request: the context feature.
pub fn hour_of_day(t: i64) -> u32 {
    (t.rem_euclid(86_400) / 3_600) as u32
}
