//! Models as safetensors files with PyTorch's state_dict names and shapes (conv1.weight
//! [6,3,5,5] ... fc3.bias [10], F32), so a model saved here loads into the tutorial's `Net`
//! with `load_state_dict(safetensors.torch.load_file(path))`, and the reverse.

use crate::model::{Arch, Layout, K, MAX_WIDTH};
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
        let data = t.data();
        let vals: Vec<f32> = match t.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            _ => data.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
        };
        if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
            return Err(format!("{source}: tensor {} holds a non-finite value at index {i}", s.name));
        }
        p[s.range()].copy_from_slice(&vals);
    }
    Ok(p)
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
