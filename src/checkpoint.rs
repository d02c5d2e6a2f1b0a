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

/// The largest model file of any network: the most parameters a network may have
/// (`net::MAX_PARAMS`) in F64, their batch norm buffers at most as many again, and a header.
pub const MAX_NET_MODEL_BYTES: u64 = 16 * crate::net::MAX_PARAMS + (1 << 20);

/// A network's text as an error shows it: escaped (a file's metadata is not trusted to be
/// printable) and cut to 200 characters.
pub fn shown_text(text: &str) -> String {
    let t: String = text.escape_debug().collect();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}... ({} characters)", &t[..i], text.chars().count()),
        None => t,
    }
}

/// A model of any network, read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct NetModel {
    /// Its network's text (canonical), LeNet's name for a file of the LeNet-shaped networks.
    pub text: String,
    pub params: Vec<f32>,
    /// Batch norm's running statistics (empty without batch norm).
    pub buffers: Vec<f32>,
    /// The training steps behind it (batch norm's `num_batches_tracked`, 0 without batch norm).
    pub steps: u64,
}

/// A model of any network: its text (the file's own, else `net`, the user's), parameters,
/// buffers and steps. Every tensor of the network must be there by its name with its exact
/// shape; the first that is missing or differs is named; a running variance below 0 is
/// refused. A file without a text is LeNet-shaped (read by `from_safetensors_any`) or needs
/// `net`; a file with a text and a different `net` is refused.
pub fn from_safetensors_net(bytes: &[u8], source: &str, net: Option<&str>) -> Result<NetModel, String> {
    open_bounded(bytes, source, MAX_NET_MODEL_BYTES)?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("{source}: not a readable safetensors file: {e}"))?;
    let own = header.metadata().as_ref().and_then(|m| m.get(NET_KEY)).map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    let net = net.map(str::trim).filter(|t| !t.is_empty());
    let text = match own.as_deref().or(net) {
        Some(t) => t.to_string(),
        None => {
            let (arch, params) = from_safetensors_any(bytes, source).map_err(|e| format!("{e}; a model of another network needs its text (--net)"))?;
            return Ok(NetModel { text: arch.name(), params, buffers: Vec::new(), steps: 0 });
        }
    };
    if text.len() > crate::net::text::MAX_TEXT {
        return Err(format!("{source}: its network's text has {} characters, more than a network's {}", text.len(), crate::net::text::MAX_TEXT));
    }
    let shown = shown_text(&text);
    let parsed = crate::net::text::parse(&text).map_err(|e| format!("{source}: its network '{shown}': {e}"))?;
    let plan = crate::net::plan::Plan::new(&parsed).map_err(|e| format!("{source}: its network '{shown}': {e}"))?;
    let canonical = crate::net::text::print(&parsed);
    if let (Some(_), Some(given)) = (&own, net) {
        let theirs = crate::net::text::parse(given).map(|n| crate::net::text::print(&n));
        if theirs.as_deref() != Ok(canonical.as_str()) {
            return Err(format!("{source} holds the network '{shown}', not '{}': drop --net, or give that one", shown_text(given)));
        }
    }
    let st = open_bounded(bytes, source, MAX_NET_MODEL_BYTES)?;
    let p = &plan.params;
    let mut views = Vec::new();
    for t in p.params.iter().chain(&p.buffers) {
        let v = st.tensor(&t.name).map_err(|_| format!("{source}: tensor {} of the network '{shown}' is missing", t.name))?;
        if v.shape() != t.shape.as_slice() {
            return Err(format!("{source}: tensor {} has shape {:?}, and the network '{shown}' has {:?}", t.name, v.shape(), t.shape));
        }
        if !matches!(v.dtype(), Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) {
            return Err(format!("{source}: tensor {} has dtype {:?}, expected F32", t.name, v.dtype()));
        }
        views.push((t, v));
    }
    let mut steps = 0;
    for name in &p.batches_tracked {
        let v = st.tensor(name).map_err(|_| format!("{source}: tensor {name} of the network '{shown}' is missing"))?;
        if v.dtype() != Dtype::I64 || !v.shape().is_empty() {
            return Err(format!("{source}: tensor {name} is {:?} of shape {:?}, and batch norm's step count is one I64", v.dtype(), v.shape()));
        }
        let n = i64::from_le_bytes(v.data()[..8].try_into().expect("an I64 is 8 bytes"));
        steps = u64::try_from(n).map_err(|_| format!("{source}: tensor {name} holds {n} steps, below 0"))?;
    }
    let (mut params, mut buffers) = (vec![0.0f32; p.total], vec![0.0f32; p.buffer_total]);
    for (t, v) in views {
        let vals = floats(&v, &t.name, source)?;
        if t.role == crate::net::params::Role::RunningVar {
            if let Some(i) = vals.iter().position(|&x| x < 0.0) {
                return Err(format!("{source}: tensor {} holds a variance below 0 ({}) at index {i}", t.name, vals[i]));
            }
        }
        let into = if p.params.contains(t) { &mut params } else { &mut buffers };
        into[t.range()].copy_from_slice(&vals);
    }
    Ok(NetModel { text: canonical, params, buffers, steps })
}

/// The safetensors header of a file no larger than MAX_MODEL_BYTES.
fn open<'a>(bytes: &'a [u8], source: &str) -> Result<SafeTensors<'a>, String> {
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(format!("{source}: {} bytes, more than the {MAX_MODEL_BYTES} of the largest model (widths {MAX_WIDTH}, in F64): not a model file", bytes.len()));
    }
    SafeTensors::deserialize(bytes).map_err(|e| format!("{source}: not a readable safetensors file: {e}"))
}

/// `open` of a file of any network, no larger than `max` bytes.
fn open_bounded<'a>(bytes: &'a [u8], source: &str, max: u64) -> Result<SafeTensors<'a>, String> {
    if bytes.len() as u64 > max {
        return Err(format!("{source}: {} bytes, more than the {max} of the largest model of any network: not a model file", bytes.len()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::plan::Plan;

    fn file(text: &str, steps: u64, edit: impl Fn(&mut Vec<f32>, &mut Vec<f32>, &Params)) -> Vec<u8> {
        let plan = Plan::new(&crate::net::text::parse(text).unwrap()).unwrap();
        let p = &plan.params;
        let (mut params, mut buffers) = (p.init(1), p.init_buffers());
        edit(&mut params, &mut buffers, p);
        to_safetensors_net(&params, &buffers, steps, p, text)
    }

    /// A model file of any network reads back whole (its steps too); a variance below 0, a
    /// --net that is not the file's, and an unprintable text are refused with readable words.
    #[test]
    fn a_model_of_any_network_reads_back_and_hostile_ones_are_refused() {
        let text = "conv(4,3,bias=0) bn relu flatten linear(10)";
        let m = from_safetensors_net(&file(text, 7, |_, _, _| {}), "m", None).unwrap();
        assert_eq!((m.text.as_str(), m.steps, m.buffers.len()), (text, 7, 128));
        assert_eq!(from_safetensors_net(&file(text, 7, |_, _, _| {}), "m", Some(&format!("  {text} "))).unwrap(), m);
        let e = from_safetensors_net(&file(text, 7, |_, _, _| {}), "m", Some("lenet")).unwrap_err();
        assert!(e.starts_with("m holds the network 'conv(4,3,bias=0) bn relu flatten linear(10)', not 'lenet'"), "{e}");
        let negative = file(text, 7, |_, b, p| b[p.get("1.running_var").unwrap().offset + 2] = -1.0);
        let e = from_safetensors_net(&negative, "m", None).unwrap_err();
        assert_eq!(e, "m: tensor 1.running_var holds a variance below 0 (-1) at index 2");
        let shown = shown_text(&format!("\u{1b}]0;owned\u{7}{}", "x".repeat(500)));
        assert!(shown.starts_with("\\u{1b}]0;owned\\u{7}xxx") && shown.ends_with("... (510 characters)") && shown.len() < 230, "{shown}");
    }
}
