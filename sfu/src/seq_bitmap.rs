//! Which sequence numbers of a stream arrived: one bit each, for the last
//! `WORDS * 64` of them (the map wraps). The NACK log and the receiver
//! reports keep one each, of different sizes.

pub struct SeqBitmap<const WORDS: usize> {
    words: Box<[u64; WORDS]>,
}

impl<const WORDS: usize> Default for SeqBitmap<WORDS> {
    fn default() -> Self {
        SeqBitmap {
            words: Box::new([0; WORDS]),
        }
    }
}

impl<const WORDS: usize> SeqBitmap<WORDS> {
    /// Sequence numbers the map tells apart; a power of two, so that it
    /// wraps with the 16-bit sequence number.
    pub const SIZE: usize = {
        assert!(WORDS.is_power_of_two() && WORDS <= 1024);
        WORDS * 64
    };

    pub fn set(&mut self, seq: u16, received: bool) {
        let bit = usize::from(seq) & (Self::SIZE - 1);
        let word = &mut self.words[bit / 64];
        if received {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
    }

    pub fn get(&self, seq: u16) -> bool {
        let bit = usize::from(seq) & (Self::SIZE - 1);
        self.words[bit / 64] & (1 << (bit % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_with_its_size_and_forgets_what_is_cleared() {
        let mut map = SeqBitmap::<1>::default();
        map.set(65_535, true);
        assert!(map.get(65_535));
        assert!(map.get(63), "65,535 and 63 share a bit in a map of 64");
        assert!(!map.get(0));
        map.set(63, false);
        assert!(!map.get(65_535));
    }
}
