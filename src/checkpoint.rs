//! Models as safetensors files with PyTorch's state_dict names and shapes (conv1.weight
//! [6,3,5,5] ... fc3.bias [10], F32), so a model saved here loads into the tutorial's `Net`
//! with `load_state_dict(safetensors.torch.load_file(path))`, and the reverse. A model of any
//! other network carries its text in the metadata (`to_safetensors_net`) and the names
//! `tabcnn net --pytorch` gives its `nn.Sequential`, batch norm's buffers included.

use crate::model::{Arch, Layout, K, MAX_WIDTH};
use crate::net::params::Params;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::BTreeMap;

/// Serialise the packed parameters.
pub fn to_safetensors(params: &[f32], layout: &Layout) -> Vec<u8> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = layout.specs.iter().map(|s| (s.name.to_string(), bytemuck::cast_slice(&params[s.range()]).to_vec(), s.shape.clone())).collect();
    let views: BTreeMap<String, TensorView> = bytes.iter().map(|(n, b, shape)| (n.clone(), TensorView::new(Dtype::F32, shape.clone(), b).expect("shape matches data"))).collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("model".to_string(), "tabcnn LeNet (PyTorch CIFAR-10 tutorial Net)".to_string());
    safetensors::serialize(views, Some(meta)).expect("serialising in memory cannot fail")
}

/// The largest model file: the widest network (every width MAX_WIDTH, 3.4 M parameters) in
/// F64 is 27 MB; 40 MiB leaves room for the header. Checked before a file is read.
pub const MAX_MODEL_BYTES: u64 = 40 * 1024 * 1024;

/// Parse a safetensors file into packed parameters; `source` names it in errors. Every one of
/// the ten tensors must be there with its exact shape, as F32 (F64 and F16/BF16 are converted).
/// Everything is checked before the parameters are allocated.
pub fn from_safetensors(bytes: &[u8], layout: &Layout, source: &str) -> Result<Vec<f32>, String> {
    let st = open(bytes, source)?;
    if !layout.arch.in_limits() {
        return Err(format!("{source}: the {} network is past the widths a model may have (1 to {MAX_WIDTH})", layout.arch.name()));
    }
    let mut tensors = Vec::with_capacity(layout.specs.len());
    for s in &layout.specs {
        let t = st.tensor(s.name).map_err(|_| {
            format!("{source}: tensor {} is missing (found: {})", s.name, {
                let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
                names.sort();
                names.join(", ")
            })
        })?;
        if t.shape() != s.shape.as_slice() {
            return Err(format!("{source}: tensor {} has shape {:?}, expected {:?}", s.name, t.shape(), s.shape));
        }
        if !matches!(t.dtype(), Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) {
            return Err(format!("{source}: tensor {} has dtype {:?}, expected F32", s.name, t.dtype()));
        }
        tensors.push((s, t));
    }
    let mut p = vec![0.0f32; layout.total];
    for (s, t) in tensors {
        p[s.range()].copy_from_slice(&floats(&t, s.name, source)?);
    }
    Ok(p)
}

/// A float tensor's values as f32 (F64, F16 and BF16 converted), refused when one is not finite.
fn floats(t: &TensorView, name: &str, source: &str) -> Result<Vec<f32>, String> {
    let data = t.data();
    let vals: Vec<f32> = match t.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        _ => data.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
    };
    match vals.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(format!("{source}: tensor {name} holds a non-finite value at index {i}")),
        None => Ok(vals),
    }
}

/// The metadata key of a model file's network, in the text form (`net::text`).
pub const NET_KEY: &str = "tabcnn.net";

/// A model of any network: its parameters and buffers (batch norm's running statistics) under
/// PyTorch's state_dict names, each batch norm's `num_batches_tracked` (I64, shape []) as
/// `steps`, and the network's text in the metadata, so the file needs nothing else to load.
pub fn to_safetensors_net(params: &[f32], buffers: &[f32], steps: u64, p: &Params, text: &str) -> Vec<u8> {
    let mut bytes: Vec<(String, Dtype, Vec<u8>, Vec<usize>)> = Vec::new();
    for (t, v) in p.params.iter().map(|t| (t, params)).chain(p.buffers.iter().map(|t| (t, buffers))) {
        bytes.push((t.name.clone(), Dtype::F32, bytemuck::cast_slice(&v[t.range()]).to_vec(), t.shape.clone()));
    }
    for name in &p.batches_tracked {
        bytes.push((name.clone(), Dtype::I64, (steps as i64).to_le_bytes().to_vec(), vec![]));
    }
    let views: BTreeMap<String, TensorView> = bytes.iter().map(|(n, d, b, shape)| (n.clone(), TensorView::new(*d, shape.clone(), b).expect("shape matches data"))).collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string()), (NET_KEY.to_string(), text.to_string())]);
    safetensors::serialize(views, Some(meta)).expect("serialising in memory cannot fail")
}

/// A model of any network: its text (the file's own, else `net`, the user's), parameters and
/// buffers. Every tensor of the network must be there by its name with its exact shape; the
/// first that is missing or differs is named. A file without the text is LeNet-shaped (read by
/// `from_safetensors_any`) or needs `net`.
pub fn from_safetensors_net(bytes: &[u8], source: &str, net: Option<&str>) -> Result<(String, Vec<f32>, Vec<f32>), String> {
    open(bytes, source)?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("{source}: not a readable safetensors file: {e}"))?;
    let own = header.metadata().as_ref().and_then(|m| m.get(NET_KEY)).cloned();
    let text = match own.as_deref().or(net) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => {
            let (arch, params) = from_safetensors_any(bytes, source).map_err(|e| format!("{e}; a model of another network needs its text (--net)"))?;
            return Ok((arch.name(), params, Vec::new()));
        }
    };
    let parsed = crate::net::text::parse(&text).map_err(|e| format!("{source}: its network '{text}': {e}"))?;
    let plan = crate::net::plan::Plan::new(&parsed).map_err(|e| format!("{source}: its network '{text}': {e}"))?;
    let st = open(bytes, source)?;
    let p = &plan.params;
    let mut views = Vec::new();
    for t in p.params.iter().chain(&p.buffers) {
        let v = st.tensor(&t.name).map_err(|_| format!("{source}: tensor {} of the network '{text}' is missing", t.name))?;
        if v.shape() != t.shape.as_slice() {
            return Err(format!("{source}: tensor {} has shape {:?}, and the network '{text}' has {:?}", t.name, v.shape(), t.shape));
        }
        if !matches!(v.dtype(), Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) {
            return Err(format!("{source}: tensor {} has dtype {:?}, expected F32", t.name, v.dtype()));
        }
        views.push((t, v));
    }
    let (mut params, mut buffers) = (vec![0.0f32; p.total], vec![0.0f32; p.buffer_total]);
    for (t, v) in views {
        let into = if p.params.contains(t) { &mut params } else { &mut buffers };
        into[t.range()].copy_from_slice(&floats(&v, &t.name, source)?);
    }
    Ok((crate::net::text::print(&parsed), params, buffers))
}

/// The safetensors header of a file no larger than MAX_MODEL_BYTES.
fn open<'a>(bytes: &'a [u8], source: &str) -> Result<SafeTensors<'a>, String> {
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(format!("{source}: {} bytes, more than the {MAX_MODEL_BYTES} of the largest model (widths {MAX_WIDTH}, in F64): not a model file", bytes.len()));
    }
    SafeTensors::deserialize(bytes).map_err(|e| format!("{source}: not a readable safetensors file: {e}"))
}

/// Parse a safetensors file of either network (LeNet or the wider one): the widths are read
/// from the tensors' shapes (conv1.weight [C1,3,5,5], conv2.weight [C2,C1,5,5], fc1.weight
/// [F1,C2*25], fc2.weight [F2,F1]), held to 1..=MAX_WIDTH, then every tensor is checked as
/// `from_safetensors` does.
pub fn from_safetensors_any(bytes: &[u8], source: &str) -> Result<(Arch, Vec<f32>), String> {
    let st = open(bytes, source)?;
    let dim = |name: &str, i: usize| -> Result<usize, String> {
        let t = st.tensor(name).map_err(|_| format!("{source}: tensor {name} is missing"))?;
        t.shape().get(i).copied().ok_or_else(|| format!("{source}: tensor {name} has shape {:?}", t.shape()))
    };
    let arch = Arch { c1: dim("conv1.weight", 0)?, c2: dim("conv2.weight", 0)?, f1: dim("fc1.weight", 0)?, f2: dim("fc2.weight", 0)? };
    if !arch.in_limits() || dim("conv1.weight", 2)? != K {
        return Err(format!(
            "{source}: not a network this tool trains (widths {}-{}-{}-{} from the tensors' shapes; each must be 1 to {MAX_WIDTH}, with 5x5 kernels)",
            arch.c1, arch.c2, arch.f1, arch.f2
        ));
    }
    Ok((arch, from_safetensors(bytes, &Layout::new(arch), source)?))
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}
