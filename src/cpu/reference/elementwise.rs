//! The reference elementwise layers: the activations (ReLU, GELU with the exact erf as
//! `nn.GELU()`, tanh, sigmoid), dropout (`nn.Dropout(p)` in training: kept values scaled by
//! 1/(1-p)), a constant scale, and a residual block's sum. Each backward takes the layer's
//! input (the activations' derivatives are functions of it), so nothing else must be kept.
//!
//! Shapes: every tensor is the same [N * L] (L floats per image, whatever the layer's shape).

use super::Real;
use crate::net::Act;

/// out = act(inp).
pub fn act_forward<T: Real>(out: &mut [T], inp: &[T], act: Act) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = act_value(x, act);
    }
}

/// dinp = dout * act'(inp). Overwrites dinp.
pub fn act_backward<T: Real>(dinp: &mut [T], dout: &[T], inp: &[T], act: Act) {
    for ((d, &g), &x) in dinp.iter_mut().zip(dout).zip(inp) {
        *d = g * act_slope(x, act);
    }
}

/// sigmoid(x) = 1 / (1 + e^-x).
fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (T::ZERO - x).exp())
}

/// GELU's Phi(x), the standard normal's distribution function: (1 + erf(x / sqrt 2)) / 2.
fn phi<T: Real>(x: T) -> T {
    let half = T::from_f64(0.5);
    half * (T::ONE + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
}

/// act(x); ReLU passes a NaN on as PyTorch's does (a NaN is neither above nor below 0).
pub fn act_value<T: Real>(x: T, act: Act) -> T {
    match act {
        Act::Relu => {
            if x <= T::ZERO {
                T::ZERO
            } else {
                x
            }
        }
        Act::Gelu => x * phi(x),
        Act::Tanh => x.tanh(),
        Act::Sigmoid => sigmoid(x),
    }
}

/// act'(x): ReLU's is 0 at 0 (PyTorch's choice); GELU's Phi(x) + x phi(x) with phi the normal
/// density e^(-x^2/2) / sqrt(2 pi); tanh's 1 - tanh^2; sigmoid's s (1 - s).
pub fn act_slope<T: Real>(x: T, act: Act) -> T {
    match act {
        Act::Relu => {
            if x > T::ZERO {
                T::ONE
            } else {
                T::ZERO
            }
        }
        Act::Gelu => {
            let density = (T::ZERO - x * x * T::from_f64(0.5)).exp() * T::from_f64(1.0 / (2.0 * std::f64::consts::PI).sqrt());
            phi(x) + x * density
        }
        Act::Tanh => {
            let t = x.tanh();
            T::ONE - t * t
        }
        Act::Sigmoid => {
            let s = sigmoid(x);
            s * (T::ONE - s)
        }
    }
}

/// A 32-bit integer hash (Wellons' lowbias32): the dropout mask's randomness, the same u32
/// arithmetic in every engine and in WGSL, so a mask depends only on (seed, index).
#[inline]
pub fn mix(mut v: u32) -> u32 {
    v ^= v >> 16;
    v = v.wrapping_mul(0x7feb_352d);
    v ^= v >> 15;
    v = v.wrapping_mul(0x846c_a68b);
    v ^ (v >> 16)
}

/// Whether dropout with probability `p` keeps element `i` of the batch's [N * L] under `seed`:
/// a uniform 24-bit draw u in [0, 1) kept when u >= p.
#[inline]
pub fn dropout_keeps(seed: u32, i: usize, p: f32) -> bool {
    let u = (mix(seed ^ mix(i as u32)) >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
    u >= p
}

/// Training-mode dropout: out = inp / (1 - p) where kept, 0 elsewhere. (Evaluation is the
/// identity, and p = 1 drops everything.)
pub fn dropout_forward<T: Real>(out: &mut [T], inp: &[T], p: f32, seed: u32) {
    let keep = if p < 1.0 { T::from_f64(1.0 / (1.0 - p as f64)) } else { T::ZERO };
    for (i, (o, &x)) in out.iter_mut().zip(inp).enumerate() {
        *o = if dropout_keeps(seed, i, p) { x * keep } else { T::ZERO };
    }
}

/// dinp = dout / (1 - p) where the forward kept the element, 0 elsewhere. Overwrites dinp.
pub fn dropout_backward<T: Real>(dinp: &mut [T], dout: &[T], p: f32, seed: u32) {
    dropout_forward(dinp, dout, p, seed);
}

/// out = inp * s; its backward is dinp = dout * s.
pub fn scale_forward<T: Real>(out: &mut [T], inp: &[T], s: f32) {
    let s = T::from_f64(s as f64);
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = x * s;
    }
}

/// out = inp + body: a residual block's output from its input and its layers' output (its
/// backward sends dout to both unchanged).
pub fn residual_forward<T: Real>(out: &mut [T], inp: &[T], body: &[T]) {
    for ((o, &x), &b) in out.iter_mut().zip(inp).zip(body) {
        *o = x + b;
    }
}
