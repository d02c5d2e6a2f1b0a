//! A network's tensors: its parameters (trained: weights and biases, batch norm's gamma and
//! beta) and its buffers (batch norm's running mean and variance), each with the name PyTorch's
//! `state_dict` gives it, its shape, its fan-in and its offset in one packed f32 vector (64-float
//! aligned, as `model::Layout`), sized before anything is allocated.
//!
//! Names are those of the same network as an `nn.Sequential` (`tabcnn net --pytorch`): the
//! layer's index from 0 ("3.weight"), a residual block's layers under "body" ("4.body.0.weight").
//! The LeNet-shaped networks keep the tutorial's names (conv1, conv2, fc1, fc2, fc3), so every
//! model file saved so far still loads.

use super::text::as_lenet_shaped;
use super::{Layer, Net, Shape, Step};
use crate::model::{align_up, Layout, Rng};

/// What a tensor is to its layer (and to the optimizer: batch norm's parameters form a group
/// of their own, as the modern recipe's learning rates do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A convolution's [OC, C, K, K] or a linear layer's [OUT, IN].
    Weight,
    /// A convolution's or linear layer's [OC] / [OUT].
    Bias,
    /// Batch norm's gamma [C] (fixed at 1 with `scale=0`) and beta [C].
    NormScale,
    NormShift,
    /// Batch norm's running statistics [C] (buffers: not trained).
    RunningMean,
    RunningVar,
}

impl Role {
    /// The optimizer's parameter group (`Hyper::lr_groups`): 0 weights, 1 biases, 2 batch
    /// norm's parameters.
    pub fn group(self) -> usize {
        match self {
            Role::Weight => 0,
            Role::Bias => 1,
            Role::NormScale | Role::NormShift | Role::RunningMean | Role::RunningVar => 2,
        }
    }
}

/// One tensor of the packed parameters or buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// PyTorch's state_dict name, e.g. "0.weight" or "conv1.weight".
    pub name: String,
    pub shape: Vec<usize>,
    /// Offset in floats in its packed vector (a multiple of model::ALIGN).
    pub offset: usize,
    /// The layer's fan-in: PyTorch's default init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fan_in: usize,
    pub role: Role,
    /// The index in `Net::infer`'s steps of the layer it belongs to.
    pub step: usize,
    /// Trained (false: gamma fixed at 1, or a buffer).
    pub trained: bool,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Every tensor of a network, in state_dict order within each packed vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Parameters: weights, biases, gamma and beta (packed `total` floats).
    pub params: Vec<Tensor>,
    pub total: usize,
    /// Buffers: running means and variances (packed `buffer_total` floats).
    pub buffers: Vec<Tensor>,
    pub buffer_total: usize,
    /// Each batch norm's `num_batches_tracked` (an int64 in PyTorch's state_dict).
    pub batches_tracked: Vec<String>,
}

/// The PyTorch module path of the layer at `position` ("4.2" -> "3.body.1").
pub fn module_path(position: &str) -> String {
    position.split('.').map(|p| (p.parse::<usize>().expect("positions are numbers") - 1).to_string()).collect::<Vec<_>>().join(".body.")
}

impl Params {
    /// The tensors of `net`, whose shapes `steps` (from `net.infer()`) gives.
    pub fn new(net: &Net, steps: &[Step]) -> Params {
        let lenet = as_lenet_shaped(net).is_some();
        const TUTORIAL: [&str; 5] = ["conv1", "conv2", "fc1", "fc2", "fc3"];
        let mut weighted = 0;
        let (mut params, mut buffers, mut batches_tracked) = (Vec::new(), Vec::new(), Vec::new());
        let (mut total, mut buffer_total) = (0, 0);
        for (i, s) in steps.iter().enumerate() {
            let module = match (&s.layer, lenet) {
                (Layer::Conv { .. } | Layer::Linear { .. }, true) => {
                    weighted += 1;
                    TUTORIAL[weighted - 1].to_string()
                }
                _ => module_path(&s.place.position),
            };
            let c = s.input.channels();
            let add = |list: &mut Vec<Tensor>, end: &mut usize, name: &str, shape: Vec<usize>, fan_in: usize, role: Role, trained: bool| {
                let t = Tensor { name: format!("{module}.{name}"), shape, offset: *end, fan_in, role, step: i, trained };
                *end = align_up(*end + t.len());
                list.push(t);
            };
            match s.layer {
                Layer::Conv { out, k, bias, .. } => {
                    let fan_in = c * k * k;
                    add(&mut params, &mut total, "weight", vec![out, c, k, k], fan_in, Role::Weight, true);
                    if bias {
                        add(&mut params, &mut total, "bias", vec![out], fan_in, Role::Bias, true);
                    }
                }
                Layer::Linear { out, bias } => {
                    add(&mut params, &mut total, "weight", vec![out, c], c, Role::Weight, true);
                    if bias {
                        add(&mut params, &mut total, "bias", vec![out], c, Role::Bias, true);
                    }
                }
                Layer::BatchNorm { scale, .. } => {
                    add(&mut params, &mut total, "weight", vec![c], c, Role::NormScale, scale);
                    add(&mut params, &mut total, "bias", vec![c], c, Role::NormShift, true);
                    add(&mut buffers, &mut buffer_total, "running_mean", vec![c], c, Role::RunningMean, false);
                    add(&mut buffers, &mut buffer_total, "running_var", vec![c], c, Role::RunningVar, false);
                    batches_tracked.push(format!("{module}.num_batches_tracked"));
                }
                _ => {}
            }
        }
        Params { params, total, buffers, buffer_total, batches_tracked }
    }

    /// Real parameters, without the alignment's padding.
    pub fn count(&self) -> usize {
        self.params.iter().map(Tensor::len).sum()
    }

    /// PyTorch's default initialisation from `seed`: a convolution's or linear layer's weight and
    /// bias U(+-1/sqrt(fan_in)) (kaiming_uniform with a = sqrt 5 is that bound), drawn tensor by
    /// tensor in state_dict order from `Rng::new(seed)`, so a LeNet-shaped network gets exactly
    /// `model::init_params`'s weights; batch norm's gamma 1 and beta 0. Padding stays 0.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut p = vec![0.0f32; self.total];
        for t in &self.params {
            let bound = 1.0 / (t.fan_in as f32).sqrt();
            for v in &mut p[t.range()] {
                *v = match t.role {
                    Role::NormScale => 1.0,
                    Role::NormShift => 0.0,
                    _ => rng.uniform(-bound, bound),
                };
            }
        }
        p
    }

    /// The buffers as PyTorch starts them: running means 0, running variances 1.
    pub fn init_buffers(&self) -> Vec<f32> {
        let mut b = vec![0.0f32; self.buffer_total];
        for t in self.buffers.iter().filter(|t| t.role == Role::RunningVar) {
            b[t.range()].fill(1.0);
        }
        b
    }

    /// A parameter or buffer by its state_dict name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.params.iter().chain(&self.buffers).find(|t| t.name == name)
    }
}

/// The shape a batch norm of `input` is over: maps (BatchNorm2d) or features (BatchNorm1d).
pub fn norm_is_2d(input: Shape) -> bool {
    matches!(input, Shape::Maps { .. })
}

/// A LeNet-shaped network's tensors are `model::Layout`'s: names, shapes, offsets, fan-ins.
pub fn same_as_layout(p: &Params, l: &Layout) -> bool {
    p.total == l.total
        && p.buffers.is_empty()
        && p.params.len() == l.specs.len()
        && p.params.iter().zip(&l.specs).all(|(t, s)| t.name == s.name && t.shape == s.shape && t.offset == s.offset && t.fan_in == s.fan_in)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;
    use crate::net::text::parse;

    fn params(t: &str) -> Params {
        let n = parse(t).unwrap();
        Params::new(&n, &n.infer().unwrap())
    }

    #[test]
    fn lenet_shaped_networks_keep_the_tutorials_layout() {
        for (t, a) in [("lenet", Arch::LENET), ("wide", Arch::WIDE), ("256-256-256-256", Arch { c1: 256, c2: 256, f1: 256, f2: 256 })] {
            let p = params(t);
            assert!(same_as_layout(&p, &Layout::new(a)), "{t}: {:?}", p.params.iter().map(|t| &t.name).collect::<Vec<_>>());
        }
        assert_eq!(params("lenet").count(), 62006);
    }

    #[test]
    fn init_is_pytorchs_default_and_lenets_unchanged() {
        for (t, a) in [("lenet", Arch::LENET), ("wide", Arch::WIDE)] {
            assert_eq!(params(t).init(7), crate::model::init_params(&Layout::new(a), 7), "{t}");
        }
        let p = params("conv(8,3,pad=1) bn relu flatten linear(10,bias=0)");
        let (v, b) = (p.init(3), p.init_buffers());
        assert_eq!(v, p.init(3));
        assert_ne!(v, p.init(4));
        let get = |name: &str| &v[p.get(name).unwrap().range()];
        assert!(get("1.weight").iter().all(|&g| g == 1.0) && get("1.bias").iter().all(|&g| g == 0.0));
        for name in ["0.weight", "0.bias", "4.weight"] {
            let bound = 1.0 / (p.get(name).unwrap().fan_in as f32).sqrt();
            let max = get(name).iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(max <= bound && max > 0.5 * bound, "{name}: max {max}, bound {bound}");
        }
        assert_eq!(&b[p.get("1.running_mean").unwrap().range()], &[0.0; 8]);
        assert_eq!(&b[p.get("1.running_var").unwrap().range()], &[1.0; 8]);
    }

    #[test]
    fn other_networks_are_named_as_nn_sequential_names_them() {
        let p = params("conv(8,3,pad=1,bias=0) bn(scale=0) relu res(conv(8,3,pad=1) bn relu) flatten linear(10)");
        let names: Vec<(&str, Vec<usize>, bool)> = p.params.iter().map(|t| (t.name.as_str(), t.shape.clone(), t.trained)).collect();
        assert_eq!(
            names,
            [
                ("0.weight", vec![8, 3, 3, 3], true),
                ("1.weight", vec![8], false),
                ("1.bias", vec![8], true),
                ("3.body.0.weight", vec![8, 8, 3, 3], true),
                ("3.body.0.bias", vec![8], true),
                ("3.body.1.weight", vec![8], true),
                ("3.body.1.bias", vec![8], true),
                ("5.weight", vec![10, 8192], true),
                ("5.bias", vec![10], true),
            ]
        );
        let buffers: Vec<&str> = p.buffers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(buffers, ["1.running_mean", "1.running_var", "3.body.1.running_mean", "3.body.1.running_var"]);
        assert_eq!(p.batches_tracked, ["1.num_batches_tracked", "3.body.1.num_batches_tracked"]);
        assert!(p.params.iter().chain(&p.buffers).all(|t| t.offset % crate::model::ALIGN == 0));
        assert_eq!(p.get("3.body.0.weight").unwrap().fan_in, 72);
        assert_eq!(module_path("4.2.1"), "3.body.1.body.0");
    }
}
