//! tabcnn: LeNet trained on CIFAR-10 with hand-written WGSL compute kernels through wgpu (in a
//! browser tab on WebGPU, or natively on any adapter), with a CPU engine on every core where no
//! GPU is there, and a plain-Rust CPU reference that is the oracle of every kernel and engine.
//!
//! - `model`: sizes, the packed parameter layout (PyTorch state_dict names), init.
//! - `recipe`: the training recipe (`Hyper`, `Schedule`), the link's and the CLI's settings and
//!   their one validator, the PyTorch recipe's reference figures.
//! - `cpu`: the reference layers (forward/backward pairs), the same layers as matrix products,
//!   and the CPU engine over threads (and, in the tab, helper workers).
//! - `gpu`: the wgpu engine running shaders/*.wgsl.
//! - `outputs`: what every engine returns (metrics, test results, activations, the error).
//! - `train`: the training loop over either engine.
//! - `data`: CIFAR-10 binary batches from a directory or the official .tar.gz.
//! - `app`: the page's browser-free logic (curves, grid, formatting).
//! - `augment`: random crop and flip (both engines draw the same).
//! - `checkpoint`: safetensors files with PyTorch's names.
//! - `saved`: a run as the page keeps it in the browser (IndexedDB) to resume after a reload.
//! - `picture`: a picture file's declared format and size, checked before the browser decodes it.
//! - `wire`: the page's messages between its main thread and its worker (JSON, arrays beside it).
//! - `explain`: one output of a layer as the arithmetic that made it (the convolution view).
//! - `stats`: per-layer weight and gradient norms and histograms (vanishing or exploding gradients).
//! - `timeline`: the weights through a run, thinned to a fixed count (the scrubbing slider).
//! - `views`: the classroom views' pixels and lists (filters, feature maps, confusion cells, own images).
//! - `burn_net` (feature `burn`): the same LeNet in burn, a second reference and the peer engine.

// The layer functions take outputs, then inputs, then sizes (the house rule shared with the WGSL
// and the dispatch code), which makes long argument lists.
#![allow(clippy::too_many_arguments)]
// `!(x <= limit)` and `!(hi > lo)` are meant: they also catch NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod app;
pub mod augment;
#[cfg(feature = "burn")]
pub mod burn_net;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod explain;
pub mod gpu;
pub mod model;
pub mod net;
pub mod outputs;
pub mod picture;
pub mod recipe;
pub mod saved;
pub mod stats;
pub mod timeline;
pub mod timer;
pub mod train;
pub mod views;
pub mod wire;
