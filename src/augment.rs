//! Training past the recipe: data augmentation (random crop with 4-pixel zero padding and
//! horizontal flip, as torchvision's `RandomCrop(32, padding=4)` then `RandomHorizontalFlip()`)
//! and learning-rate schedules (constant, step, cosine), shared by both engines.
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

/// "none", "flip", "crop" or "flip,crop" -> (flip, crop).
pub fn parse_augment(v: &str) -> Result<(bool, bool), String> {
    match v {
        "none" | "" => Ok((false, false)),
        "flip" => Ok((true, false)),
        "crop" => Ok((false, true)),
        "flip,crop" | "crop,flip" | "both" => Ok((true, true)),
        _ => Err(format!("augment '{v}': expected none, flip, crop or flip,crop")),
    }
}

/// The text `parse_augment` reads for (flip, crop).
pub fn augment_name(flip: bool, crop: bool) -> &'static str {
    match (flip, crop) {
        (false, false) => "none",
        (true, false) => "flip",
        (false, true) => "crop",
        (true, true) => "flip,crop",
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

/// How the learning rate changes over the epochs of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Schedule {
    /// The recipe: the same rate throughout.
    #[default]
    Constant,
    /// Multiplied by `gamma` every `every` epochs (PyTorch's StepLR, stepped per epoch).
    Step { every: usize, gamma: f32 },
    /// Cosine from the base rate down to 0 over the run (CosineAnnealingLR with T_max = the
    /// epochs, eta_min 0, stepped per epoch).
    Cosine,
}

impl Schedule {
    /// The learning rate of epoch `epoch` (1-based) of `epochs`.
    pub fn lr(&self, base: f32, epoch: usize, epochs: usize) -> f32 {
        let e = epoch.saturating_sub(1);
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((e / every.max(1)) as i32),
            Schedule::Cosine => {
                let t = e as f64 / epochs.max(1) as f64;
                (base as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }

    /// "constant", "step:EVERY:GAMMA" (e.g. step:10:0.1) or "cosine".
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let bad = || format!("schedule '{s}': expected constant, cosine or step:EVERY:GAMMA (e.g. step:10:0.1)");
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            _ => {
                let mut it = s.strip_prefix("step:").ok_or_else(bad)?.split(':');
                let every: usize = it.next().and_then(|v| v.parse().ok()).filter(|&v| v > 0).ok_or_else(bad)?;
                let gamma: f32 = it.next().and_then(|v| v.parse().ok()).filter(|v: &f32| v.is_finite() && *v > 0.0).ok_or_else(bad)?;
                if it.next().is_some() {
                    return Err(bad());
                }
                Ok(Schedule::Step { every, gamma })
            }
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            Schedule::Cosine => write!(f, "cosine"),
        }
    }
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

    #[test]
    fn schedules() {
        let s = Schedule::Step { every: 10, gamma: 0.1 };
        assert_eq!(s.lr(0.05, 1, 30), 0.05);
        assert_eq!(s.lr(0.05, 10, 30), 0.05);
        assert!((s.lr(0.05, 11, 30) - 0.005).abs() < 1e-9);
        assert!((s.lr(0.05, 21, 30) - 0.0005).abs() < 1e-9);
        let c = Schedule::Cosine;
        assert_eq!(c.lr(0.1, 1, 4), 0.1);
        assert!((c.lr(0.1, 3, 4) - 0.05).abs() < 1e-7, "halfway is half");
        assert!(c.lr(0.1, 4, 4) > 0.0 && c.lr(0.1, 4, 4) < 0.02);
        assert_eq!(Schedule::Constant.lr(0.001, 7, 2), 0.001);
        for text in ["constant", "cosine", "step:10:0.1"] {
            assert_eq!(Schedule::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "step", "step:0:0.1", "step:5", "step:5:-1", "step:5:0.1:2", "linear"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
