//! The same LeNet and recipe written with burn 0.22.1 (feature `burn`): a second, independently
//! written implementation that the tests hold our kernels and CPU reference against, and the
//! `burn` engine (burn-wgpu on the adapter of our GPU engine) that `tabcnn bench` races ours.
//!
//! Only burn's own modules and optimizer are used: Conv2d, MaxPool2d, Linear, Relu,
//! CrossEntropyLoss, SGD with momentum (dampening 0, as PyTorch) and weight decay, autodiff.
//! Our parameters are packed as PyTorch's state_dict (`model::Layout`); burn's Linear weight is
//! [in, out], the transpose of PyTorch's [out, in], so fc weights are transposed on the way in
//! and out.

use crate::augment::Augment;
use crate::cpu::gather_augmented;
use crate::data::Split;
use crate::gpu::Gpu;
use crate::model::{self, Layout, CLASSES, IMG_LEN};
use crate::outputs::{EngineError, EvalResult, Metrics};
use crate::recipe::Hyper;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// The tutorial's Net: conv 3->6 5x5, maxpool 2, conv 6->16 5x5, maxpool 2, fc 400->120->84->10.
#[derive(Module, Debug)]
pub struct Net {
    conv1: Conv2d, // weight [6,3,5,5]
    conv2: Conv2d, // weight [16,6,5,5]
    fc1: Linear,   // weight [400,120] (burn: [in, out])
    fc2: Linear,   // weight [120,84]
    fc3: Linear,   // weight [84,10]
    pool: MaxPool2d,
    relu: Relu,
}

/// Which packed tensors are Linear weights (stored transposed by burn).
fn is_linear_weight(name: &str) -> bool {
    name.starts_with("fc") && name.ends_with(".weight")
}

/// [R, C] row-major -> [C, R] row-major.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// A packed tensor in burn's layout: PyTorch's shape, or [in, out] for Linear weights.
fn to_burn(name: &str, v: &[f32], shape: &[usize]) -> (Vec<f32>, Vec<usize>) {
    if is_linear_weight(name) {
        (transpose(v, shape[0], shape[1]), vec![shape[1], shape[0]])
    } else {
        (v.to_vec(), shape.to_vec())
    }
}

fn param<const D: usize>(params: &[f32], layout: &Layout, name: &str, device: &Device) -> Param<Tensor<D>> {
    let s = layout.spec(name).expect("every LeNet tensor is in the layout");
    let (v, shape) = to_burn(name, &params[s.range()], &s.shape);
    Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), device))
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 data")
}

impl Net {
    /// The network with burn's own initialisation, on `device`.
    pub fn init(device: &Device) -> Net {
        let conv = |c: usize, oc: usize| Conv2dConfig::new([c, oc], [model::K, model::K]).init(device);
        Net {
            conv1: conv(model::C1_IN, model::C1_OUT),
            conv2: conv(model::C1_OUT, model::C2_OUT),
            fc1: LinearConfig::new(model::FC1_IN, model::FC1_OUT).init(device),
            fc2: LinearConfig::new(model::FC1_OUT, model::FC2_OUT).init(device),
            fc3: LinearConfig::new(model::FC2_OUT, CLASSES).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            relu: Relu::new(),
        }
    }

    /// The network with our packed parameters [P] (`Layout::lenet()`), on `device`.
    pub fn from_params(params: &[f32], device: &Device) -> Net {
        let l = Layout::lenet();
        assert_eq!(params.len(), l.total, "packed parameter vector length");
        let mut net = Net::init(device);
        let (p, d) = (params, device);
        (net.conv1.weight, net.conv1.bias) = (param(p, &l, "conv1.weight", d), Some(param(p, &l, "conv1.bias", d)));
        (net.conv2.weight, net.conv2.bias) = (param(p, &l, "conv2.weight", d), Some(param(p, &l, "conv2.bias", d)));
        (net.fc1.weight, net.fc1.bias) = (param(p, &l, "fc1.weight", d), Some(param(p, &l, "fc1.bias", d)));
        (net.fc2.weight, net.fc2.bias) = (param(p, &l, "fc2.weight", d), Some(param(p, &l, "fc2.bias", d)));
        (net.fc3.weight, net.fc3.bias) = (param(p, &l, "fc3.weight", d), Some(param(p, &l, "fc3.bias", d)));
        net
    }

    /// Load a safetensors file with PyTorch's state_dict names and layout (what tabcnn saves,
    /// and what `torch.save`'s safetensors twin holds) with burn-store's own reader and its
    /// PyTorch adapter (which transposes the Linear weights); `source` names it in errors.
    pub fn load_safetensors(bytes: Vec<u8>, device: &Device, source: &str) -> Result<Net, String> {
        use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
        let mut net = Net::init(device);
        let mut store = SafetensorsStore::from_bytes(Some(bytes)).with_from_adapter(PyTorchToBurnAdapter);
        let r = net.load_from(&mut store).map_err(|e| format!("{source}: burn-store cannot read it: {e}"))?;
        if !r.missing.is_empty() || !r.errors.is_empty() {
            return Err(format!("{source}: missing {:?}, errors {:?}", r.missing.iter().map(|m| &m.0).collect::<Vec<_>>(), r.errors));
        }
        Ok(net)
    }

    /// x [N,3,32,32] -> logits [N,10].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(self.relu.forward(self.conv1.forward(x))); // [N,6,14,14]
        let x = self.pool.forward(self.relu.forward(self.conv2.forward(x))); // [N,16,5,5]
        let x: Tensor<2> = x.flatten(1, 3); // [N,400], (C,H,W) order as torch.flatten
        let x = self.relu.forward(self.fc1.forward(x));
        let x = self.relu.forward(self.fc2.forward(x));
        self.fc3.forward(x)
    }

    /// The ten tensors in state_dict order with their names (burn layout).
    fn tensors(&self) -> Vec<(&'static str, Tensor<1>)> {
        let b = |p: &Option<Param<Tensor<1>>>| p.as_ref().expect("LeNet layers have biases").val();
        vec![
            ("conv1.weight", self.conv1.weight.val().flatten(0, 3)),
            ("conv1.bias", b(&self.conv1.bias)),
            ("conv2.weight", self.conv2.weight.val().flatten(0, 3)),
            ("conv2.bias", b(&self.conv2.bias)),
            ("fc1.weight", self.fc1.weight.val().flatten(0, 1)),
            ("fc1.bias", b(&self.fc1.bias)),
            ("fc2.weight", self.fc2.weight.val().flatten(0, 1)),
            ("fc2.bias", b(&self.fc2.bias)),
            ("fc3.weight", self.fc3.weight.val().flatten(0, 1)),
            ("fc3.bias", b(&self.fc3.bias)),
        ]
    }

    /// Pack burn-layout tensors (parameters or their gradients) as `Layout::lenet()`.
    fn pack(tensors: Vec<(&'static str, Vec<f32>)>) -> Vec<f32> {
        let l = Layout::lenet();
        let mut out = vec![0.0; l.total];
        for (name, v) in tensors {
            let s = l.spec(name).expect("known tensor");
            let v = if is_linear_weight(name) { transpose(&v, s.shape[1], s.shape[0]) } else { v };
            out[s.range()].copy_from_slice(&v);
        }
        out
    }

    /// The parameters, packed as `Layout::lenet()` (PyTorch layout).
    pub fn params(&self) -> Vec<f32> {
        Net::pack(self.tensors().into_iter().map(|(n, t)| (n, floats(t))).collect())
    }

    /// The gradients of the parameters in `grads`, packed as `Layout::lenet()`.
    pub fn grads(&self, grads: &burn::tensor::Gradients) -> Vec<f32> {
        let g = |t: Tensor<1>| floats(t.grad(grads).expect("every parameter has a gradient"));
        let gw4 = |p: &Param<Tensor<4>>| floats(p.val().grad(grads).expect("conv weight gradient").flatten::<1>(0, 3));
        let gw2 = |p: &Param<Tensor<2>>| floats(p.val().grad(grads).expect("fc weight gradient").flatten::<1>(0, 1));
        let gb = |p: &Option<Param<Tensor<1>>>| g(p.as_ref().expect("bias").val());
        Net::pack(vec![
            ("conv1.weight", gw4(&self.conv1.weight)),
            ("conv1.bias", gb(&self.conv1.bias)),
            ("conv2.weight", gw4(&self.conv2.weight)),
            ("conv2.bias", gb(&self.conv2.bias)),
            ("fc1.weight", gw2(&self.fc1.weight)),
            ("fc1.bias", gb(&self.fc1.bias)),
            ("fc2.weight", gw2(&self.fc2.weight)),
            ("fc2.bias", gb(&self.fc2.bias)),
            ("fc3.weight", gw2(&self.fc3.weight)),
            ("fc3.bias", gb(&self.fc3.bias)),
        ])
    }
}

/// Images [N,3,32,32] (normalised as the tutorial: (x/255 - 0.5)/0.5, augmented as `aug`
/// says, the same draw as our engines) and labels [N] of the records `index[base..base+n]`.
pub fn batch(split: &Split, index: &[u32], base: usize, n: usize, aug: &Augment, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let mut x = vec![0.0f32; n * IMG_LEN];
    let mut y = vec![0u32; n];
    gather_augmented(&mut x, &mut y, &split.images, &split.labels, index, base, n, aug);
    let x = Tensor::from_data(TensorData::new(x, [n, 3, 32, 32]), device);
    let y = Tensor::from_ints(TensorData::new(y.iter().map(|&v| v as i32).collect::<Vec<i32>>(), [n]), device);
    (x, y)
}

/// Predictions of `net` (a model without autodiff on `device`) on every record of `test`, in
/// batches of 500.
pub fn evaluate(net: &Net, test: &Split, device: &Device) -> EvalResult {
    let all: Vec<u32> = (0..test.len() as u32).collect();
    let mut preds = Vec::with_capacity(test.len());
    for base in (0..all.len()).step_by(500) {
        let n = 500.min(all.len() - base);
        let (x, _) = batch(test, &all, base, n, &Augment::default(), device);
        let logits = net.forward(x);
        let rows = logits.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 data");
        let p = logits.argmax(1).flatten::<1>(0, 1).into_data().convert::<i64>().try_to_vec::<i64>().expect("int data");
        // burn's argmax, marked where the row is not finite (as our engines mark theirs)
        let marked = rows.chunks_exact(CLASSES).map(|z| if z.iter().all(|v| v.is_finite()) { 0 } else { crate::outputs::NOT_FINITE });
        preds.extend(p.into_iter().zip(marked).map(|(v, m)| v as u32 | m));
    }
    EvalResult::from_preds(preds, &test.labels)
}

/// What one forward/backward pass computed, for comparison with our engines.
pub struct Pass {
    pub logits: Vec<f32>, // [N,10]
    pub loss: f32,        // batch mean
    pub grads: Vec<f32>,  // [P], packed as Layout::lenet()
}

/// Forward, cross-entropy and backward of `params` on (x [N,3,32,32] normalised, y [N]), on
/// `device` (made autodiff here).
pub fn forward_backward(params: &[f32], x: &[f32], y: &[u32], device: &Device) -> Pass {
    let device = device.clone().autodiff();
    let n = y.len();
    let net = Net::from_params(params, &device);
    let xt = Tensor::from_data(TensorData::new(x.to_vec(), [n, 3, 32, 32]), &device);
    let yt = Tensor::from_ints(TensorData::new(y.iter().map(|&v| v as i32).collect::<Vec<i32>>(), [n]), &device);
    let logits = net.forward(xt);
    let loss = CrossEntropyLossConfig::new().init(&device).forward(logits.clone(), yt);
    let grads = loss.backward();
    Pass { logits: floats(logits.flatten::<1>(0, 1)), loss: floats(loss)[0], grads: net.grads(&grads) }
}

/// burn's SGD for the recipe: momentum with dampening 0 and no Nesterov (PyTorch's
/// `optim.SGD(momentum=0.9)`; burn's own default dampening is 0.1), L2 weight decay added to
/// the gradient before momentum as PyTorch does.
pub fn sgd(momentum: f32, weight_decay: f32) -> ModuleOptimizer {
    let mut c = SgdConfig::new().with_momentum(Some(MomentumConfig { momentum: momentum as f64, dampening: 0.0, nesterov: false }));
    if weight_decay != 0.0 {
        c = c.with_weight_decay(Some(WeightDecayConfig { penalty: weight_decay }));
    }
    c.init()
}

/// Open burn-wgpu on the adapter of our GPU engine: a device of its own (burn requests the
/// adapter's full features and limits, as it does by itself), so burn's kernels and ours run
/// on the same hardware side by side without sharing a queue.
pub fn wgpu_device(gpu: &Gpu) -> Result<Device, EngineError> {
    use burn::tensor::wgpu::WgpuSetup;
    let adapter = gpu.wgpu_adapter.clone();
    let instance = gpu.instance.clone().ok_or_else(|| EngineError::unavailable("the burn engine needs a GPU opened by Gpu::new"))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("burn-wgpu device"),
        required_features: adapter.features() - wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
        required_limits: adapter.limits(),
        memory_hints: wgpu::MemoryHints::MemoryUsage,
        ..Default::default()
    }))
    .map_err(|e| EngineError::unavailable(format!("burn-wgpu cannot open a device on {}: {e}", gpu.adapter)))?;
    let backend = adapter.get_info().backend;
    Device::wgpu_options()
        .setup(WgpuSetup { instance, adapter, device, queue, backend })
        .init()
        .map_err(|e| EngineError::unavailable(format!("burn-wgpu cannot use {}: {e}", gpu.adapter)))
}

/// burn's pure-Rust CPU backend (flex).
pub fn cpu_device() -> Device {
    Device::flex()
}

/// The `burn` training engine: burn's model, loss and optimizer, driven the way a careful burn
/// user would: batches built on the host, no readback per step (the per-step loss and correct
/// count stay on the device until `read_metrics`).
pub struct BurnTrainer {
    /// The device with autodiff.
    pub device: Device,
    pub name: String,
    net: Option<Net>,
    optim: ModuleOptimizer,
    loss: CrossEntropyLoss,
    pub batch: usize,
    /// Augmentation of the training batches, drawn on the host.
    pub augment: Augment,
    train: Split,
    test: Split,
    order: Vec<u32>,
    epoch_step: usize,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    /// Per step [loss, correct], concatenated in groups of 256 to keep the list short.
    pending: Vec<Tensor<1>>,
    chunks: Vec<Tensor<1>>,
    global_step: u64,
    bad_step: Option<u64>,
}

impl BurnTrainer {
    pub fn test_len(&self) -> usize {
        self.test.len()
    }
    /// Test record `r`, u8 CHW [3,32,32].
    pub fn test_image(&self, r: usize) -> Option<&[u8]> {
        self.test.images.get(r * IMG_LEN..(r + 1) * IMG_LEN)
    }

    pub fn new(device: Device, name: String, params: &[f32], hyper: &Hyper, train: &Split, test: &Split) -> BurnTrainer {
        let device = device.autodiff();
        BurnTrainer {
            net: Some(Net::from_params(params, &device)),
            optim: sgd(hyper.momentum, hyper.weight_decay),
            loss: CrossEntropyLossConfig::new().init(&device),
            device,
            name,
            batch: hyper.batch,
            augment: Augment::default(),
            train: train.clone(),
            test: test.clone(),
            order: (0..train.len() as u32).collect(),
            epoch_step: 0,
            lr: hyper.lr,
            momentum: hyper.momentum,
            weight_decay: hyper.weight_decay,
            pending: Vec::new(),
            chunks: Vec::new(),
            global_step: 0,
            bad_step: None,
        }
    }

    pub fn train_len(&self) -> usize {
        self.train.len()
    }

    /// New learning rate now; a new momentum or weight decay makes a new optimizer (burn's SGD
    /// fixes them at construction), which starts its velocity from zero.
    pub fn set_hyper(&mut self, lr: f32, momentum: f32, weight_decay: f32) {
        if (momentum, weight_decay) != (self.momentum, self.weight_decay) {
            self.optim = sgd(momentum, weight_decay);
        }
        (self.lr, self.momentum, self.weight_decay) = (lr, momentum, weight_decay);
    }

    pub fn begin_epoch(&mut self, order: &[u32], step: usize) {
        self.order = order.to_vec();
        self.epoch_step = step;
    }

    /// `steps` SGD steps; nothing is read back.
    pub fn train_steps(&mut self, steps: usize) {
        let n = self.batch;
        for _ in 0..steps {
            let (x, y) = batch(&self.train, &self.order, self.epoch_step * n, n, &self.augment, &self.device);
            let net = self.net.take().expect("the model is present between steps");
            let logits = net.forward(x);
            let loss = self.loss.forward(logits.clone(), y.clone());
            let correct = logits.detach().argmax(1).flatten::<1>(0, 1).equal(y).float().sum();
            self.pending.push(Tensor::cat(vec![loss.clone().detach(), correct], 0).inner());
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            self.net = Some(self.optim.step(self.lr as f64, net, grads));
            if self.pending.len() == 256 {
                self.chunks.push(Tensor::cat(std::mem::take(&mut self.pending), 0));
            }
            self.epoch_step += 1;
        }
    }

    /// Metrics of the steps since the last call: one readback of every step's loss and count.
    pub fn read_metrics(&mut self) -> Result<Metrics, EngineError> {
        let mut parts = std::mem::take(&mut self.chunks);
        if !self.pending.is_empty() {
            parts.push(Tensor::cat(std::mem::take(&mut self.pending), 0));
        }
        let mut m = Metrics { global_step: self.global_step, bad_step: self.bad_step, ..Default::default() };
        if parts.is_empty() {
            return Ok(m);
        }
        let v = floats(Tensor::cat(parts, 0));
        for (i, s) in v.chunks_exact(2).enumerate() {
            if !(s[0] <= model::DIVERGED_LOSS) && m.bad_step.is_none() {
                m.bad_step = Some(self.global_step + i as u64);
            }
            m.loss_sum += s[0];
            m.correct += s[1] as u32;
        }
        let steps = (v.len() / 2) as u32;
        m.steps = steps;
        m.seen = steps * self.batch as u32;
        self.global_step += steps as u64;
        m.global_step = self.global_step;
        self.bad_step = m.bad_step;
        Ok(m)
    }

    /// The test set on the model without autodiff.
    pub fn evaluate(&self) -> EvalResult {
        evaluate(&self.net.as_ref().expect("model").valid(), &self.test, &self.device.clone().inner())
    }

    pub fn read_params(&self) -> Vec<f32> {
        self.net.as_ref().expect("model").params()
    }

    /// New parameters and a fresh optimizer (zero velocity), e.g. loading a model.
    pub fn write_params(&mut self, params: &[f32]) {
        self.net = Some(Net::from_params(params, &self.device));
        self.optim = sgd(self.momentum, self.weight_decay);
    }

    pub fn reset_counters(&mut self) {
        self.pending.clear();
        self.chunks.clear();
        self.global_step = 0;
        self.bad_step = None;
    }

    pub fn set_batch(&mut self, batch: usize) -> Result<(), EngineError> {
        if batch == 0 || batch > self.train.len() {
            return Err(EngineError::settings(format!("batch {batch} must be between 1 and the {} training records", self.train.len())));
        }
        self.batch = batch;
        Ok(())
    }
}
