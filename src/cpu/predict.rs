//! Forward passes only, on the fast layers: the CPU engine's evaluation and predictions, and a
//! `Predictor` that runs them under weights of its own (a kept step of the timeline, the
//! weights of a refresh) without an engine's training state. A piece of `predict_piece` records
//! (PREDICT_BATCH, fewer for a wide network) is split into one forward-only lane a thread, as
//! the engine splits a training batch (another thread count changes a lane's size, so the GEMM's
//! blocking and the rounding, only).

use super::engine::{split, Lane, Threads};
use super::reference::{self, PREDICT_BATCH};
use crate::model::{Arch, Layout, CLASSES, IMG_LEN};
use crate::outputs::EngineError;
use std::sync::Mutex;

/// The most a piece of forward passes may hold in activations: a wide network predicts fewer
/// images at a time (the widest, 2.4 MiB of activations an image, 13 instead of 100).
pub const PREDICT_BYTES: u64 = 32 << 20;

/// Images per piece of forward passes for `arch`: PREDICT_BATCH, fewer where their
/// activations would pass PREDICT_BYTES, at least one.
pub fn predict_piece(arch: Arch) -> usize {
    (PREDICT_BYTES / reference::acts_bytes(1, arch)).clamp(1, PREDICT_BATCH as u64) as usize
}

/// Forward-only lanes, one a thread, together holding a piece of `predict_piece` images (each
/// lane ceil(piece / threads) of them). Behind a lock so that predicting takes `&self`.
pub(super) struct ForwardLanes {
    pub(super) lanes: Mutex<Vec<Lane>>,
    piece: usize,
}

impl ForwardLanes {
    pub(super) fn new(threads: &Threads, layout: &Layout) -> ForwardLanes {
        let piece = predict_piece(layout.arch);
        let per_lane = piece.div_ceil(threads.count);
        ForwardLanes { lanes: Mutex::new((0..threads.count).map(|_| Lane::forward_only(per_lane, layout)).collect()), piece }
    }

    /// The logits [R,10] of records `index` (R of them) of `images` [*,3,32,32] under the
    /// packed parameters `p`, a piece at a time, each piece split over the lanes.
    pub(super) fn logits(&self, threads: &Threads, l: &Layout, p: &[f32], images: &[u8], index: &[u32]) -> Vec<f32> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let mut logits = vec![0.0; index.len() * CLASSES];
        // gather reads a label per record; predictions need none.
        let labels = vec![0u8; images.len() / IMG_LEN];
        for (piece, out) in index.chunks(self.piece).zip(logits.chunks_mut(self.piece * CLASSES)) {
            let parts = split(piece.len(), lanes.len());
            threads.each(lanes.iter_mut().zip(parts.clone()), |(lane, (lo, n))| {
                reference::gather(&mut lane.acts.x, &mut lane.acts.y, images, &labels, piece, lo, n);
                lane.forward(p, l, n);
            });
            for (lane, (lo, n)) in lanes.iter().zip(parts) {
                out[lo * CLASSES..][..n * CLASSES].copy_from_slice(&lane.acts.logits[..n * CLASSES]);
            }
        }
        logits
    }
}

/// Softmax probabilities [10] of each row of logits [R,10].
pub(super) fn probabilities_of(logits: &[f32]) -> Vec<[f32; CLASSES]> {
    logits.chunks_exact(CLASSES).map(reference::softmax).collect()
}

/// The predicted class (the reference's argmax and tie rule) of each row of logits [R,10],
/// marked `outputs::NOT_FINITE` where the row is not finite.
pub(super) fn predictions_of(logits: &[f32]) -> Vec<u32> {
    logits.chunks_exact(CLASSES).map(reference::prediction).collect()
}

/// Records `start .. start + count` as an index.
pub(super) fn range(start: usize, count: usize) -> Vec<u32> {
    (start as u32..(start + count) as u32).collect()
}

/// The network under weights of its own, forward only, on `threads` threads: what the page's
/// views predict with (the timeline's kept steps, the grid and the confusion cells' images).
pub struct Predictor {
    layout: Layout,
    /// Packed like the GPU buffers (Layout's offsets).
    params: Vec<f32>,
    threads: Threads,
    lanes: ForwardLanes,
}

impl Predictor {
    /// The network `arch` with packed parameters `params`, predicting on `threads` threads (at
    /// least 1). The weights' count and the lanes' memory are checked before anything is
    /// allocated.
    pub fn new(arch: Arch, params: Vec<f32>, threads: usize) -> Result<Predictor, EngineError> {
        let layout = Layout::new(arch);
        check_count(&layout, params.len())?;
        reference::check_memory(arch, predict_piece(arch).div_ceil(threads.max(1)))?;
        let threads = Threads::new(threads.max(1));
        let lanes = ForwardLanes::new(&threads, &layout);
        Ok(Predictor { layout, params, threads, lanes })
    }

    pub fn arch(&self) -> Arch {
        self.layout.arch
    }

    /// Predict under `params` (packed for the same network) from now on; the lanes stay.
    pub fn set_params(&mut self, params: &[f32]) -> Result<(), EngineError> {
        check_count(&self.layout, params.len())?;
        self.params.copy_from_slice(params);
        Ok(())
    }

    /// The logits [R,10] of the records `index` of `images` [*,3,32,32].
    pub fn logits(&self, images: &[u8], index: &[u32]) -> Vec<f32> {
        self.lanes.logits(&self.threads, &self.layout, &self.params, images, index)
    }

    /// Softmax probabilities [10] of the records `index` of `images` (the page's grid).
    pub fn probabilities(&self, images: &[u8], index: &[u32]) -> Vec<[f32; CLASSES]> {
        probabilities_of(&self.logits(images, index))
    }

    /// The predicted class of records `start .. start + count` of `images` (marked
    /// `outputs::NOT_FINITE` where the outputs were not finite).
    pub fn predict_range(&self, images: &[u8], start: usize, count: usize) -> Vec<u32> {
        predictions_of(&self.logits(images, &range(start, count)))
    }
}

/// `n` weights must be the network's count.
fn check_count(layout: &Layout, n: usize) -> Result<(), EngineError> {
    if n != layout.total {
        return Err(EngineError::settings(format!("{n} weights given, and the {} network has {}", layout.arch.name(), layout.total)));
    }
    Ok(())
}

/// A predictor kept from one use to the next (the page's refreshes every few seconds and its
/// scrubs): made on first use and when the network changes; otherwise only its weights are
/// replaced, so its lanes (`predict_piece` images of activations) are allocated once.
#[derive(Default)]
pub struct KeptPredictor(Option<Predictor>);

impl KeptPredictor {
    /// Predict for `arch` under `params` from now on (made on `threads` threads if it must be).
    pub fn set(&mut self, arch: Arch, params: &[f32], threads: usize) -> Result<(), EngineError> {
        match &mut self.0 {
            Some(p) if p.arch() == arch => p.set_params(params),
            slot => {
                *slot = Some(Predictor::new(arch, params.to_vec(), threads)?);
                Ok(())
            }
        }
    }

    /// The predictor under the last weights `set` took (None before the first).
    pub fn get(&self) -> Option<&Predictor> {
        self.0.as_ref()
    }
}
