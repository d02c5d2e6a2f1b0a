//! Training past the recipe: data augmentation (random crop with 4-pixel zero padding and
//! horizontal flip, as torchvision's `RandomCrop(32, padding=4)` then `RandomHorizontalFlip()`)
//! shared by both engines (the learning-rate schedules are in `recipe`).
//!
//! The random draw of each training image is a pure function of (key, position in the epoch's
//! order): the GPU's gather kernel (shaders/gather.wgsl) and the CPU reference compute the same
//! integer hash, so both engines see identical augmented batches, and a resumed run draws what
//! the uninterrupted one would have. The key changes every epoch (`epoch_key`).

use crate::model::{IMG, IMG_C};

/// Zero padding of the random crop, in pixels on each side.
pub const PAD: i32 = 4;

/// What augmentation a run uses; `key` is this epoch's (see `epoch_key`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    pub flip: bool,
    pub crop: bool,
    pub key: u32,
}

impl Augment {
    pub fn enabled(&self) -> bool {
        self.flip || self.crop
    }
    /// The `aug` word of gather.wgsl's params: bit 0 flip, bit 1 crop.
    pub fn bits(&self) -> u32 {
        self.flip as u32 | (self.crop as u32) << 1
    }
}

/// A 32-bit integer hash (Chris Wellons' lowbias32), written with wrapping u32 ops exactly as
/// in gather.wgsl.
pub fn hash(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The key of epoch `epoch` (1-based) of a run with this seed.
pub fn epoch_key(seed: u64, epoch: usize) -> u32 {
    hash(hash(seed as u32 ^ hash((seed >> 32) as u32)) ^ epoch as u32)
}

/// The draw for the image at position `pos` of the epoch's order: (flip, dx, dy), with dx, dy
/// in [-PAD, PAD] (0 when that augmentation is off).
pub fn draw(a: &Augment, pos: u32) -> (bool, i32, i32) {
    let h = hash(a.key ^ hash(pos));
    let flip = a.flip && h & 1 == 1;
    let (dx, dy) = if a.crop { (((h >> 8) % 9) as i32 - PAD, ((h >> 16) % 9) as i32 - PAD) } else { (0, 0) };
    (flip, dx, dy)
}

/// For output element `e` of a [3,32,32] image, the source element it takes, or None where
/// the crop window lies on the zero padding. Crop first, then flip: out(y, x) = crop(y, 31 - x)
/// when flipped, crop(y, x) = src(y + dy, x + dx).
pub fn source(e: usize, flip: bool, dx: i32, dy: i32) -> Option<usize> {
    let plane = IMG * IMG;
    let (c, y, x) = (e / plane, (e / IMG) % IMG, e % IMG);
    let x = if flip { IMG - 1 - x } else { x };
    let (sy, sx) = (y as i32 + dy, x as i32 + dx);
    let n = IMG as i32;
    ((0..n).contains(&sy) && (0..n).contains(&sx)).then(|| c * plane + sy as usize * IMG + sx as usize)
}

/// One image [3,32,32] of raw pixel values augmented with (flip, dx, dy); padding is 0.
pub fn apply(src: &[u8], flip: bool, dx: i32, dy: i32) -> Vec<u8> {
    (0..IMG_C * IMG * IMG).map(|e| source(e, flip, dx, dy).map_or(0, |s| src[s])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Rng;

    fn image(seed: u64) -> Vec<u8> {
        let mut r = Rng::new(seed);
        (0..3072).map(|_| r.below(256) as u8).collect()
    }

    #[test]
    fn a_flip_twice_is_the_identity() {
        let img = image(1);
        let once = apply(&img, true, 0, 0);
        assert_ne!(once, img);
        assert_eq!(apply(&once, true, 0, 0), img);
        // And a flip mirrors each row.
        assert_eq!(once[5], img[31 - 5]);
        assert_eq!(once[2 * 1024 + 7 * 32 + 3], img[2 * 1024 + 7 * 32 + 28]);
    }

    #[test]
    fn crops_stay_within_the_padded_image() {
        let img = image(2);
        let a = Augment { flip: true, crop: true, key: 77 };
        let mut seen = std::collections::HashSet::new();
        for pos in 0..2000 {
            let (flip, dx, dy) = draw(&a, pos);
            assert!((-PAD..=PAD).contains(&dx) && (-PAD..=PAD).contains(&dy), "offset ({dx}, {dy})");
            seen.insert((flip, dx, dy));
            let out = apply(&img, flip, dx, dy);
            for (e, &v) in out.iter().enumerate() {
                let (c, y, x) = (e / 1024, (e / 32) % 32, e % 32);
                let x = if flip { 31 - x } else { x };
                let (sy, sx) = (y as i32 + dy, x as i32 + dx);
                if (0..32).contains(&sy) && (0..32).contains(&sx) {
                    assert_eq!(v, img[c * 1024 + sy as usize * 32 + sx as usize]);
                } else {
                    assert_eq!(v, 0, "padding is zero");
                }
            }
        }
        // Every flip and offset of the 2 x 9 x 9 combinations occurs.
        assert_eq!(seen.len(), 2 * 9 * 9);
        // Off means off.
        assert_eq!(draw(&Augment { key: 77, ..Default::default() }, 5), (false, 0, 0));
    }

    #[test]
    fn epochs_draw_differently_and_seeds_repeat() {
        let k1 = epoch_key(0, 1);
        assert_eq!(k1, epoch_key(0, 1));
        assert_ne!(k1, epoch_key(0, 2));
        assert_ne!(k1, epoch_key(1, 1));
    }
}
