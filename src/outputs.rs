//! What every engine returns (GPU, CPU, burn): the metrics of a stretch of training steps, the
//! test-set result, the activations of one image, and the error type.

use crate::model::{CLASSES, H2, IMG};
use std::fmt;

/// What kind of problem an engine has, so each gets its own answer: bad settings and limits
/// are the user's to change (the engine stays), a lost device or a validation error means the
/// GPU cannot go on (the page moves the run to the CPU engine), an unavailable one was never
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A setting or input that cannot work (a batch past the training set, a saved point of
    /// another network, a record that does not exist).
    Settings,
    /// Past what the device holds (a binding, the dataset's size, its memory).
    Limits,
    /// The device is gone (lost, crashed, or a readback that never came back).
    DeviceLost,
    /// The device refused our commands (a validation or internal error).
    Validation,
    /// No adapter, no device, or the kernels do not compile on it.
    Unavailable,
}

/// A problem of an engine (GPU, CPU or burn), of a kind, with what to tell the user.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> EngineError {
        EngineError { kind, message: message.into() }
    }
    pub fn settings(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::Settings, message)
    }
    pub fn limits(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::Limits, message)
    }
    pub fn device_lost(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::DeviceLost, message)
    }
    pub fn validation(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::Validation, message)
    }
    pub fn unavailable(message: impl Into<String>) -> EngineError {
        EngineError::new(ErrorKind::Unavailable, message)
    }
    /// The GPU cannot go on after it: the run continues on another engine.
    pub fn ends_the_device(&self) -> bool {
        matches!(self.kind, ErrorKind::DeviceLost | ErrorKind::Validation | ErrorKind::Unavailable)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for EngineError {}

/// What accumulated since the last readback.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Sum over steps of the batch-mean loss.
    pub loss_sum: f32,
    pub correct: u32,
    pub seen: u32,
    pub steps: u32,
    /// Global step (0-based) of the first non-finite loss, if any.
    pub bad_step: Option<u64>,
    pub global_step: u64,
}

impl Metrics {
    /// One CPU training step of `batch` images: its loss sum and correct predictions, and
    /// whether it diverged (a batch-mean loss above DIVERGED_LOSS or not finite, or `bad`:
    /// something else the engine saw that is not finite); the first such step is kept.
    pub fn record_step(&mut self, loss_sum: f32, correct: u32, batch: usize, bad: bool) {
        let mean = loss_sum / batch as f32;
        if (!(mean <= crate::model::DIVERGED_LOSS) || bad) && self.bad_step.is_none() {
            self.bad_step = Some(self.global_step);
        }
        self.loss_sum += mean;
        self.correct += correct;
        self.seen += batch as u32;
        self.steps += 1;
        self.global_step += 1;
    }

    /// The metrics since the last call, the accumulators zeroed (the divergence and the step
    /// count kept): what a CPU engine's readback returns.
    pub fn take(&mut self) -> Metrics {
        let m = *self;
        *self = Metrics { bad_step: m.bad_step, global_step: m.global_step, ..Default::default() };
        m
    }
}

/// Set in an engine's prediction (the class in the low bits) when that image's logits were
/// not all finite: weights that are finite but huge (a legal file), or a run that diverged,
/// overflow the outputs, and argmax then picks a class that means nothing. Every engine marks
/// them (the GPU's eval_accumulate, the CPU's `prediction`), and `EvalResult` counts them.
pub const NOT_FINITE: u32 = 1 << 31;

/// The test-set result: confusion[true][predicted], each record's prediction, and how many
/// records' outputs were not finite (their predictions are counted, and mean nothing).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalResult {
    pub confusion: [[u32; CLASSES]; CLASSES],
    #[serde(with = "crate::wire::bulk")]
    pub preds: Vec<u32>,
    #[serde(default)]
    pub not_finite: u32,
}

/// Predictions with their NOT_FINITE marks taken off, and how many had one.
fn unmark(mut preds: Vec<u32>) -> (Vec<u32>, u32) {
    let mut marked = 0;
    for p in &mut preds {
        marked += (*p & NOT_FINITE != 0) as u32;
        *p &= !NOT_FINITE;
    }
    (preds, marked)
}

impl EvalResult {
    /// From an engine's predictions (marked where the outputs were not finite) and the labels.
    pub fn from_preds(preds: Vec<u32>, labels: &[u8]) -> EvalResult {
        let (preds, not_finite) = unmark(preds);
        let mut confusion = [[0; CLASSES]; CLASSES];
        for (p, &l) in preds.iter().zip(labels) {
            confusion[l as usize][*p as usize] += 1;
        }
        EvalResult { confusion, preds, not_finite }
    }
    /// From a confusion matrix an engine counted and its marked predictions.
    pub fn from_counted(confusion: [[u32; CLASSES]; CLASSES], preds: Vec<u32>) -> EvalResult {
        let (preds, not_finite) = unmark(preds);
        EvalResult { confusion, preds, not_finite }
    }
    /// What is wrong with this result, where something is: the outputs that were not finite.
    pub fn problem(&self) -> Option<String> {
        (self.not_finite > 0).then(|| {
            format!(
                "the network's outputs overflowed (are not finite) on {} of {} test images, so its predictions there mean nothing: its weights are too large, or the run diverged",
                self.not_finite,
                self.total()
            )
        })
    }
    pub fn total(&self) -> u32 {
        self.confusion.iter().flatten().sum()
    }
    pub fn correct(&self) -> u32 {
        (0..CLASSES).map(|i| self.confusion[i][i]).sum()
    }
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.total().max(1) as f64
    }
    /// Per-class accuracy (recall), in class order.
    pub fn class_accuracy(&self) -> [f64; CLASSES] {
        let mut a = [0.0; CLASSES];
        for (i, row) in self.confusion.iter().enumerate() {
            let t: u32 = row.iter().sum();
            a[i] = row[i] as f64 / t.max(1) as f64;
        }
        a
    }
}

/// Everything one image does inside the network: the activations of a batch-1 forward, for
/// the page's feature-map view (the CPU reference's and the GPU inspect pass's alike).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Inside {
    #[serde(with = "crate::wire::bulk")]
    pub x: Vec<f32>, // [3,32,32] the normalised input
    #[serde(with = "crate::wire::bulk")]
    pub h1: Vec<f32>, // [C1,28,28] relu(conv1) (LeNet: C1 = 6)
    #[serde(with = "crate::wire::bulk")]
    pub p1: Vec<f32>, // [C1,14,14]
    #[serde(with = "crate::wire::bulk")]
    pub h2: Vec<f32>, // [C2,10,10] relu(conv2) (LeNet: C2 = 16)
    #[serde(with = "crate::wire::bulk")]
    pub p2: Vec<f32>, // [C2,5,5]
    #[serde(with = "crate::wire::bulk")]
    pub a1: Vec<f32>, // [F1] relu(fc1) (LeNet: 120)
    #[serde(with = "crate::wire::bulk")]
    pub a2: Vec<f32>, // [F2] relu(fc2) (LeNet: 84)
    #[serde(with = "crate::wire::bulk")]
    pub logits: Vec<f32>, // [10]
}

impl Inside {
    /// softmax(logits) [10].
    pub fn probabilities(&self) -> [f32; CLASSES] {
        crate::cpu::softmax(&self.logits)
    }
}

/// Where the network looks for class `class` in one image: the gradients of that class's
/// logit (its score before the softmax) with respect to the input and to conv2. Computed by
/// every engine from one batch-1 forward and backward (the GPU engine's own kernels, with the
/// conv1 input gradient training never needs); the page draws `saliency` and `cam`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Looks {
    pub class: usize,
    #[serde(with = "crate::wire::bulk")]
    pub logits: Vec<f32>, // [10]
    #[serde(with = "crate::wire::bulk")]
    pub dx: Vec<f32>, // [3,32,32] d logits[class] / d x, x the normalised input
    #[serde(with = "crate::wire::bulk")]
    pub h2: Vec<f32>, // [C2,10,10] relu(conv2): Grad-CAM's feature maps
    #[serde(with = "crate::wire::bulk")]
    pub dbias2: Vec<f32>, // [C2] d logits[class] / d conv2.bias = the sum over (y, x) of d logit / d conv2's pre-ReLU output
}

impl Looks {
    /// The saliency map [32,32]: per pixel, the largest |d logit / d x| over its three channels.
    pub fn saliency(&self) -> Vec<f32> {
        let plane = IMG * IMG;
        (0..plane).map(|p| (0..3).map(|c| self.dx[c * plane + p].abs()).fold(0.0, f32::max)).collect()
    }

    /// Grad-CAM's weights [C2]: each conv2 map's mean gradient, alpha_k = dbias2_k / (10 * 10).
    pub fn cam_weights(&self) -> Vec<f32> {
        self.dbias2.iter().map(|g| g / (H2 * H2) as f32).collect()
    }

    /// The class-activation map [10,10] at conv2: relu(sum over k of alpha_k * h2[k]).
    pub fn cam(&self) -> Vec<f32> {
        let plane = H2 * H2;
        let a = self.cam_weights();
        (0..plane).map(|p| a.iter().enumerate().map(|(k, w)| w * self.h2[k * plane + p]).sum::<f32>().max(0.0)).collect()
    }
}

/// An image and a class the engines' `looks` can take, or what is wrong with them.
pub fn check_looks(image: &[u8], class: usize) -> Result<(), EngineError> {
    if image.len() != crate::model::IMG_LEN {
        return Err(EngineError::settings(format!("looks: {} bytes, not a 3x32x32 image", image.len())));
    }
    if class >= CLASSES {
        return Err(EngineError::settings(format!("looks: class {class} does not exist (there are {CLASSES})")));
    }
    Ok(())
}
