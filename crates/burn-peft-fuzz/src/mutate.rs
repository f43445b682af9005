//! Mutations of seed inputs: the byte-level moves of AFL and libFuzzer (bit flips, extreme
//! integers at any offset, truncation, chunk deletion, duplication and insertion, splicing
//! with another seed) and, for text, numbers and tokens swapped for extreme ones.

use burn_peft_core::SplitMix64;

/// Integers that break size arithmetic, as little-endian bytes of every width.
const EXTREMES: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1_000_000_000,
    i64::MAX as u64,
    u64::MAX,
];

/// What a number or token in a text input may become.
const TEXT_SWAPS: [&str; 14] = [
    "0",
    "-1",
    "1000000000",
    "18446744073709551615",
    "9223372036854775808",
    "1e308",
    "-1e308",
    "NaN",
    "null",
    "\"\"",
    "[]",
    "{}",
    "\u{0}",
    "\"\\ud800\"",
];

/// A seeded source of mutated inputs.
pub struct Mutator {
    rng: SplitMix64,
}

impl Mutator {
    /// A mutator whose sequence of inputs is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    /// One to four mutations of a seed picked from `seeds` (spliced with another at times).
    pub fn next(&mut self, seeds: &[Vec<u8>], text: bool) -> Vec<u8> {
        let mut input = seeds[self.below(seeds.len())].clone();
        for _ in 0..1 + self.below(4) {
            self.mutate(&mut input, seeds, text);
        }
        input
    }

    fn mutate(&mut self, input: &mut Vec<u8>, seeds: &[Vec<u8>], text: bool) {
        let len = input.len();
        let kinds = if text { 8 } else { 7 };
        match self.below(kinds) {
            0 if len > 0 => {
                let at = self.below(len);
                input[at] ^= 1 << self.below(8);
            }
            1 if len > 0 => {
                let at = self.below(len);
                input[at] = self.rng.next_u64() as u8;
            }
            2 => {
                let value = EXTREMES[self.below(EXTREMES.len())];
                let width = [1, 2, 4, 8][self.below(4)];
                if len >= width {
                    let at = self.below(len - width + 1);
                    input[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
            3 => input.truncate(self.below(len + 1)),
            4 if len > 0 => {
                let at = self.below(len);
                let n = 1 + self.below((len - at).min(256));
                input.drain(at..at + n);
            }
            5 if len > 0 => {
                let at = self.below(len);
                let n = 1 + self.below((len - at).min(256));
                let chunk = input[at..at + n].to_vec();
                let to = self.below(len + 1);
                input.splice(to..to, chunk);
            }
            6 => {
                let other = &seeds[self.below(seeds.len())];
                let cut = self.below(len + 1);
                let from = self.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            _ => self.swap_token(input),
        }
    }

    /// Replaces a run of digits (or of letters) with an extreme number or token.
    fn swap_token(&mut self, input: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        let at = self.below(input.len());
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+';
        if !word(input[at]) {
            return;
        }
        let start = input[..at]
            .iter()
            .rposition(|&b| !word(b))
            .map_or(0, |p| p + 1);
        let end = input[at..]
            .iter()
            .position(|&b| !word(b))
            .map_or(input.len(), |p| at + p);
        let swap = TEXT_SWAPS[self.below(TEXT_SWAPS.len())].as_bytes();
        input.splice(start..end, swap.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs_and_they_differ_from_the_seed() {
        let seeds = vec![b"{\"r\": 8, \"alpha\": 16}".to_vec(), vec![0u8; 64]];
        let run = |seed| {
            let mut m = Mutator::new(seed);
            (0..200).map(|_| m.next(&seeds, true)).collect::<Vec<_>>()
        };
        let (a, b) = (run(7), run(7));
        assert_eq!(a, b);
        let changed = a.iter().filter(|i| !seeds.contains(i)).count();
        assert!(changed > 150, "{changed} of 200 changed");
        assert!(
            a.iter()
                .any(|i| String::from_utf8_lossy(i).contains("18446744073709551615"))
        );
    }
}
