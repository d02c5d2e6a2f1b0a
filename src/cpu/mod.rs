//! The CPU side: `reference`, the plain-loop layers every engine is tested against; `layers`,
//! the same layers as matrix products; `engine`, the CPU engine that trains on them over every
//! core; `predict`, their forward passes alone (evaluation, and a `Predictor` under weights of
//! its own). The reference's items are re-exported here (`cpu::conv_pool_forward` is the oracle).

pub mod engine;
pub mod layers;
pub mod net_engine;
pub mod net_lanes;
pub mod predict;
pub mod reference;

pub use engine::{all_cores, check_engine_memory, lane_bytes, Budget, CpuEngine, EngineBytes, Rounding, MAX_CPU_ENGINE_BYTES};
pub use predict::{predict_piece, KeptPredictor, Predictor, PREDICT_BYTES};
pub use reference::*;
