//! ggml storage types and their dequantization to f32.

use half::{bf16, f16};

/// A ggml tensor type, by its id in the GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
    /// 32 values: f16 scale, 32 × 4-bit, offset 8.
    Q4_0,
    /// 32 values: f16 scale and minimum, 32 × 4-bit.
    Q4_1,
    /// 32 values: f16 scale, 32 × int8.
    Q8_0,
    /// 32 values: f16 scale, 5-bit quants (high bits packed in a u32), offset 16.
    Q5_0,
    /// 32 values: f16 scale and minimum, 5-bit quants.
    Q5_1,
    /// 256 values in 8 sub-blocks with 6-bit scales and minimums, 4-bit quants.
    Q4K,
    /// 256 values: 6-bit quants, int8 scales per 16.
    Q6K,
    /// Any other type (not dequantized).
    Other(u32),
}

impl GgmlType {
    /// The type for a GGUF type id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            30 => GgmlType::Bf16,
            other => GgmlType::Other(other),
        }
    }

    /// (values per block, bytes per block), for the types this reader knows.
    pub fn block(&self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q6K => (256, 210),
            GgmlType::Other(_) => return None,
        })
    }

    /// Bytes taken by `n` values; `None` for unknown types or counts that are not whole blocks.
    pub fn byte_size(&self, n: u64) -> Option<u64> {
        let (per, bytes) = self.block()?;
        n.is_multiple_of(per)
            .then(|| (n / per).checked_mul(bytes))?
    }
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `n` values of type `kind` from `raw` (exactly `kind.byte_size(n)` bytes).
pub(crate) fn dequantize(kind: GgmlType, raw: &[u8], n: usize) -> Option<Vec<f32>> {
    let (per, bytes) = kind.block()?;
    let (per, bytes) = (per as usize, bytes as usize);
    if !n.is_multiple_of(per) || raw.len() != n / per * bytes {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for b in raw.chunks_exact(bytes) {
        match kind {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(half_at(b, 0)),
            GgmlType::Bf16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = half_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
            GgmlType::Q4_0 => {
                let d = half_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| d * ((q & 0xF) as i32 - 8) as f32));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (half_at(b, 0), half_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| d * (q & 0xF) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
            GgmlType::Q5_0 => {
                let d = half_at(b, 0);
                dequant_q5(&b[2..22], |q| d * (q as i32 - 16) as f32, &mut out);
            }
            GgmlType::Q5_1 => {
                let (d, m) = (half_at(b, 0), half_at(b, 2));
                dequant_q5(&b[4..24], |q| d * q as f32 + m, &mut out);
            }
            GgmlType::Q4K => dequant_q4k(b, &mut out),
            GgmlType::Q6K => dequant_q6k(b, &mut out),
            GgmlType::Other(_) => return None,
        }
    }
    Some(out)
}

/// Q5 blocks: a u32 of high bits, then 16 bytes of low nibbles; `value(q)` maps a 5-bit q.
fn dequant_q5(b: &[u8], value: impl Fn(u8) -> f32, out: &mut Vec<f32>) {
    let qh = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let qs = &b[4..20];
    // Bit j of qh is the fifth bit of value j, bit j + 16 that of value j + 16.
    let high = |bit: usize| (((qh >> bit) & 1) << 4) as u8;
    out.extend((0..16).map(|j| value((qs[j] & 0xF) | high(j))));
    out.extend((0..16).map(|j| value((qs[j] >> 4) | high(j + 16))));
}

/// Scale and minimum of sub-block `j` from Q4_K's 12 packed 6-bit values.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn dequant_q4k(b: &[u8], out: &mut Vec<f32>) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        out.extend(q.iter().map(|&v| d1 * (v & 0xF) as f32 - min1));
        out.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - min2));
    }
}

fn dequant_q6k(b: &[u8], out: &mut Vec<f32>) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = half_at(b, 208);
    for half in 0..2 {
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let sc = &sc_all[8 * half..8 * half + 8];
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
        out.extend_from_slice(&y);
    }
}
