//! A network as a list of layers (ConvNetJS's layer objects, PyTorch's `nn.Sequential`): the
//! layer types, the shapes each layer gives one image, checked layer by layer from the 32x32x3
//! input before anything is allocated, with errors that name the layer and its position.
//!
//! Submodules: `text` (the one-line text form: parse and print), `params` (the parameter
//! tensors with their PyTorch names), `cost` (parameters, multiply-adds and activations per
//! layer: the `tabcnn net` table), `pytorch` (the same network as a PyTorch program), `plan`
//! (how the layers are wired and where their tensors lie, for every engine).

pub mod cost;
pub mod params;
pub mod plan;
pub mod pytorch;
pub mod text;

use crate::model::{CLASSES, IMG, IMG_C};
use std::fmt;

/// An activation function, applied elementwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu,
    /// GELU with the exact erf (PyTorch's `nn.GELU()` default).
    Gelu,
    Tanh,
    Sigmoid,
}

/// A pooling window's reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Max,
    Avg,
}

/// One layer, with PyTorch's meaning and defaults (`text.rs` gives each its words).
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `nn.Conv2d(C, out, k, stride, padding=pad, bias=bias)`: input C x H x W, output
    /// out x OH x OW with OH = (H + 2 pad - k) / stride + 1.
    Conv {
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    },
    /// `nn.BatchNorm2d(C)` on maps (`nn.BatchNorm1d` on features): normalised by the batch's
    /// mean and variance while training, by the running ones in evaluation; `scale` false
    /// fixes gamma at 1 (PyTorch's weight with `requires_grad=False`).
    BatchNorm {
        momentum: f32,
        eps: f32,
        scale: bool,
    },
    Act(Act),
    /// `nn.MaxPool2d(k, stride)` / `nn.AvgPool2d(k, stride)`, no padding, floor.
    Pool {
        kind: Pool,
        k: usize,
        stride: usize,
    },
    /// Global average pool to 1x1 (`nn.AdaptiveAvgPool2d(1)`).
    Gap,
    /// `nn.Flatten()`: C x H x W maps to C*H*W features.
    Flatten,
    /// `nn.Linear(IN, out, bias=bias)` on features.
    Linear {
        out: usize,
        bias: bool,
    },
    /// `nn.Dropout(p)`: in training only.
    Dropout(f32),
    /// Multiply by a constant.
    Scale(f32),
    /// input + layers(input): a residual block; its layers must give the input's shape.
    Res(Vec<Layer>),
}

/// What a layer holds for one image: maps C x H x W, or features (after flatten).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Maps { c: usize, h: usize, w: usize },
    Flat(usize),
}

impl Shape {
    /// The input: one CIFAR-10 image, 3 x 32 x 32.
    pub const INPUT: Shape = Shape::Maps { c: IMG_C, h: IMG, w: IMG };

    /// Floats per image, in 64 bits (a shape is checked with it before `len` is used).
    pub fn len64(&self) -> u64 {
        match *self {
            Shape::Maps { c, h, w } => c as u64 * h as u64 * w as u64,
            Shape::Flat(f) => f as u64,
        }
    }

    /// Floats per image.
    pub fn len(&self) -> usize {
        match *self {
            Shape::Maps { c, h, w } => c * h * w,
            Shape::Flat(f) => f,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Channels (maps) or features: what a batch norm or the next layer sees as C.
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Maps { c, .. } => c,
            Shape::Flat(f) => f,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Maps { c, h, w } => write!(f, "{c}x{h}x{w}"),
            Shape::Flat(n) => write!(f, "{n}"),
        }
    }
}

/// The most filters or units a layer may have, the largest kernel, stride and padding: bounds
/// that keep every size in u32 and every buffer sane, far past what the page can train.
pub const MAX_UNITS: usize = 4096;
pub const MAX_KERNEL: usize = 32;
pub const MAX_STRIDE: usize = 8;
/// The most floats one layer may give one image (256 MiB), and the most parameters a network
/// may have (512 MiB of f32): past them no engine could hold a batch, and a count would
/// overflow a 32-bit page's sizes.
pub const MAX_ACTIVATION: u64 = 1 << 26;
pub const MAX_PARAMS: u64 = 1 << 27;
/// Layers in a network, residual blocks' layers counted, and how deep blocks may nest.
pub const MAX_LAYERS: usize = 256;
pub const MAX_DEPTH: usize = 4;

/// A network: its layers in order, from the 32x32x3 image to the 10 class scores.
#[derive(Clone, Debug, PartialEq)]
pub struct Net {
    pub layers: Vec<Layer>,
}

/// A layer's place: its position from 1 (a block's layers as "5.2") and its text.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    pub position: String,
    pub text: String,
}

/// One layer as `infer` saw it: where it is, what it takes and gives one image, and its depth
/// (0 at the top, 1 inside a block). A block's entry comes before its layers'.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub place: Place,
    pub layer: Layer,
    pub input: Shape,
    pub output: Shape,
    pub depth: usize,
}

impl Net {
    /// Every layer with its input and output shapes for one image, in order (a block's
    /// layers after the block), or why the network does not fit: the layer, its position and
    /// what is wrong. The last layer must give 10 features.
    pub fn infer(&self) -> Result<Vec<Step>, String> {
        let mut steps = Vec::new();
        let mut params = 0;
        let out = infer_list(&self.layers, Shape::INPUT, "", 0, &mut steps, &mut params)?;
        if out != Shape::Flat(CLASSES) {
            let last = steps.iter().rev().find(|s| s.depth == 0).map(|s| format!(" (layer {}, {})", s.place.position, s.place.text)).unwrap_or_default();
            return Err(format!("the network ends with {out}{last}; its last layer must give {CLASSES} outputs, one per class (end with flatten and linear({CLASSES}))"));
        }
        Ok(steps)
    }
}

fn place(prefix: &str, i: usize, layer: &Layer) -> Place {
    Place { position: format!("{prefix}{}", i + 1), text: text::layer_text(layer) }
}

fn infer_list(layers: &[Layer], mut shape: Shape, prefix: &str, depth: usize, steps: &mut Vec<Step>, params: &mut u64) -> Result<Shape, String> {
    if layers.is_empty() {
        return Err(if depth == 0 { "the network has no layers".into() } else { format!("the block at layer {} has no layers", prefix.trim_end_matches('.')) });
    }
    for (i, layer) in layers.iter().enumerate() {
        let at = place(prefix, i, layer);
        let err = |why: String| format!("layer {}, {}: {why}", at.position, at.text);
        let output = match layer {
            Layer::Res(inner) => {
                let me = steps.len();
                steps.push(Step { place: at.clone(), layer: layer.clone(), input: shape, output: shape, depth });
                let out = infer_list(inner, shape, &format!("{}.", at.position), depth + 1, steps, params)?;
                if out != shape {
                    return Err(err(format!("its layers give {out} and its input is {shape}: a residual block adds its input to its layers' output, so they must match")));
                }
                steps[me].output = out;
                shape = out;
                continue;
            }
            _ => layer_output(layer, shape).map_err(err)?,
        };
        if output.len64() > MAX_ACTIVATION {
            return Err(err(format!("it gives {output} per image, {} floats: more than any engine can hold (at most {MAX_ACTIVATION})", output.len64())));
        }
        *params += layer_params(layer, shape);
        if *params > MAX_PARAMS {
            return Err(err(format!("the network has {} parameters up to here; at most {MAX_PARAMS}", *params)));
        }
        steps.push(Step { place: at, layer: layer.clone(), input: shape, output, depth });
        shape = output;
    }
    Ok(shape)
}

/// The parameters `layer` (not a block) has on `input` (in 64 bits: checked before use).
pub fn layer_params(layer: &Layer, input: Shape) -> u64 {
    let c = input.channels() as u64;
    match *layer {
        Layer::Conv { out, k, bias, .. } => out as u64 * (c * (k * k) as u64 + bias as u64),
        Layer::Linear { out, bias } => out as u64 * (c + bias as u64),
        Layer::BatchNorm { .. } => 2 * c,
        _ => 0,
    }
}

/// The shape `layer` (not a block) gives one image of `input`, or why not.
pub fn layer_output(layer: &Layer, input: Shape) -> Result<Shape, String> {
    let maps = |what: &str| match input {
        Shape::Maps { c, h, w } => Ok((c, h, w)),
        Shape::Flat(_) => Err(format!("{what} needs maps (C x H x W), and its input is {input} features (after flatten)")),
    };
    Ok(match *layer {
        Layer::Conv { out, k, stride, pad, .. } => {
            let (_, h, w) = maps("a convolution")?;
            if h + 2 * pad < k || w + 2 * pad < k {
                return Err(format!("its input is {h}x{w}, smaller than its {k}x{k} kernel (with padding {pad})"));
            }
            Shape::Maps { c: out, h: (h + 2 * pad - k) / stride + 1, w: (w + 2 * pad - k) / stride + 1 }
        }
        Layer::Pool { k, stride, .. } => {
            let (c, h, w) = maps("pooling")?;
            if h < k || w < k {
                return Err(format!("its input is {h}x{w}, smaller than the window"));
            }
            Shape::Maps { c, h: (h - k) / stride + 1, w: (w - k) / stride + 1 }
        }
        Layer::Gap => {
            let (c, _, _) = maps("a global average pool")?;
            Shape::Maps { c, h: 1, w: 1 }
        }
        Layer::Flatten => Shape::Flat(input.len()),
        Layer::Linear { out, .. } => match input {
            Shape::Flat(_) => Shape::Flat(out),
            Shape::Maps { .. } => return Err(format!("a linear layer needs features, and its input is {input} maps: put flatten before it")),
        },
        Layer::BatchNorm { .. } | Layer::Act(_) | Layer::Dropout(_) | Layer::Scale(_) => input,
        Layer::Res(_) => unreachable!("blocks are inferred by infer_list"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(t: &str) -> Net {
        text::parse(t).unwrap()
    }

    #[test]
    fn lenets_shapes_are_the_tutorials() {
        let steps = net("lenet").infer().unwrap();
        let shapes: Vec<String> = steps.iter().map(|s| s.output.to_string()).collect();
        assert_eq!(shapes, ["6x28x28", "6x28x28", "6x14x14", "16x10x10", "16x10x10", "16x5x5", "400", "120", "120", "84", "84", "10"]);
    }

    #[test]
    fn strides_padding_and_blocks_give_pytorchs_shapes() {
        let steps = net("conv(8,3,stride=2,pad=1) bn relu res(conv(8,3,pad=1) bn relu) maxpool(3,stride=2) gap flatten linear(10)").infer().unwrap();
        let got: Vec<(String, String, usize)> = steps.iter().map(|s| (s.place.position.clone(), s.output.to_string(), s.depth)).collect();
        let want = [
            ("1", "8x16x16", 0),
            ("2", "8x16x16", 0),
            ("3", "8x16x16", 0),
            ("4", "8x16x16", 0),
            ("4.1", "8x16x16", 1),
            ("4.2", "8x16x16", 1),
            ("4.3", "8x16x16", 1),
            ("5", "8x7x7", 0),
            ("6", "8x1x1", 0),
            ("7", "8", 0),
            ("8", "10", 0),
        ];
        assert_eq!(got, want.map(|(p, s, d)| (p.to_string(), s.to_string(), d)));
    }

    /// Each shape error names the layer, its position and what does not fit.
    #[test]
    fn a_network_that_does_not_fit_is_refused_at_its_layer() {
        let cases = [
            ("conv(6,5) maxpool(2) conv(6,5) maxpool(2) conv(6,5) maxpool(2) flatten linear(10)", "layer 6, maxpool(2): its input is 1x1, smaller than the window"),
            ("maxpool(2) maxpool(2) conv(6,9) flatten linear(10)", "layer 3, conv(6,9): its input is 8x8, smaller than its 9x9 kernel (with padding 0)"),
            ("linear(10)", "layer 1, linear(10): a linear layer needs features, and its input is 3x32x32 maps: put flatten before it"),
            ("flatten conv(6,3) linear(10)", "layer 2, conv(6,3): a convolution needs maps (C x H x W), and its input is 3072 features (after flatten)"),
            ("flatten maxpool(2) linear(10)", "layer 2, maxpool(2): pooling needs maps"),
            ("conv(8,3) res(conv(16,3,pad=1)) flatten linear(10)", "layer 2, res(conv(16,3,pad=1)): its layers give 16x30x30 and its input is 8x30x30"),
            ("conv(8,3) res(relu res(conv(8,5))) flatten linear(10)", "layer 2.2, res(conv(8,5)): its layers give 8x26x26 and its input is 8x30x30"),
            ("flatten linear(12)", "the network ends with 12 (layer 2, linear(12)); its last layer must give 10 outputs"),
            ("conv(10,32)", "the network ends with 10x1x1 (layer 1, conv(10,32)); its last layer must give 10 outputs"),
            ("conv(64,5,pad=4) flatten linear(4096) linear(10)", "layer 3, linear(4096): the network has 339747584 parameters up to here; at most 134217728"),
        ];
        let growing = "conv(32,32,pad=31) ".repeat(46) + "flatten linear(10)";
        let cases = cases.iter().map(|&(t, w)| (t.to_string(), w)).chain([(growing, "layer 46, conv(32,32,pad=31): it gives 32x1458x1458 per image, 68024448 floats")]);
        for (t, want) in cases {
            let e = net(&t).infer().unwrap_err();
            println!("{}\n  -> {e}", if t.len() > 100 { &t[..100] } else { &t });
            assert!(e.starts_with(want), "{t}: {e}");
        }
    }
}
