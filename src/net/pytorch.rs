//! A network as a PyTorch program (`tabcnn net TEXT --pytorch`): it defines `net`, the same
//! network as an `nn.Sequential` (residual blocks and scaling as two small modules it defines;
//! the LeNet-shaped networks as the tutorial's `Net`), whose `state_dict` has exactly a tabcnn
//! model file's names and shapes, which the program checks itself when it runs. So
//! `net.load_state_dict(safetensors.torch.load_file(path))` loads a model tabcnn saved.

use super::params::{norm_is_2d, Params};
use super::text::{as_lenet_shaped, number, print, BN_EPS, BN_MOMENTUM};
use super::{Act, Layer, Net, Pool, Step};

/// The program for `net` (its shapes checked first).
pub fn program(net: &Net) -> Result<String, String> {
    let steps = net.infer()?;
    let params = Params::new(net, &steps);
    let mut out = format!(
        "# The tabcnn network `{}` in PyTorch. `net` is the same network: its state_dict has a\n\
         # tabcnn model file's names and shapes (checked at the end), so a model tabcnn saved loads:\n\
         #   from safetensors.torch import load_file\n\
         #   net.load_state_dict(load_file(\"model.safetensors\"))\n\
         #   net.eval()  # batch norm's running statistics, no dropout: as tabcnn evaluates\n\
         # Its inputs are tabcnn's: images as [N, 3, 32, 32] floats in [-1, 1] ((pixel / 255 - 0.5) / 0.5).\n\
         import torch\nfrom torch import nn\n",
        print(net)
    );
    match as_lenet_shaped(net) {
        Some(a) => out += &tutorial_net(a),
        None => out += &sequential(net, &steps),
    }
    out += "\n# The names and shapes of a tabcnn model file of this network.\nEXPECTED = {\n";
    for t in params.params.iter().chain(&params.buffers) {
        out += &format!("    \"{}\": {:?},\n", t.name, t.shape);
    }
    for n in &params.batches_tracked {
        out += &format!("    \"{n}\": [],\n");
    }
    out += "}\nGOT = {k: list(v.shape) for k, v in net.state_dict().items()}\nassert GOT == EXPECTED, f\"the state_dict differs from tabcnn's: {GOT}\"\n";
    Ok(out)
}

/// The tutorial's `Net` at these widths (its names: conv1, conv2, fc1, fc2, fc3).
fn tutorial_net(a: crate::model::Arch) -> String {
    format!(
        "import torch.nn.functional as F\n\n\n\
         class Net(nn.Module):\n    \
             def __init__(self):\n        \
                 super().__init__()\n        \
                 self.conv1 = nn.Conv2d(3, {c1}, 5)\n        \
                 self.pool = nn.MaxPool2d(2, 2)\n        \
                 self.conv2 = nn.Conv2d({c1}, {c2}, 5)\n        \
                 self.fc1 = nn.Linear({c2} * 5 * 5, {f1})\n        \
                 self.fc2 = nn.Linear({f1}, {f2})\n        \
                 self.fc3 = nn.Linear({f2}, 10)\n\n    \
             def forward(self, x):\n        \
                 x = self.pool(F.relu(self.conv1(x)))\n        \
                 x = self.pool(F.relu(self.conv2(x)))\n        \
                 x = torch.flatten(x, 1)\n        \
                 x = F.relu(self.fc1(x))\n        \
                 x = F.relu(self.fc2(x))\n        \
                 x = self.fc3(x)\n        \
                 return x\n\n\n\
         net = Net()\n",
        c1 = a.c1,
        c2 = a.c2,
        f1 = a.f1,
        f2 = a.f2
    )
}

/// `net = nn.Sequential(...)`, with the helper modules it uses defined first.
fn sequential(net: &Net, steps: &[Step]) -> String {
    let uses = |f: &dyn Fn(&Layer) -> bool| steps.iter().any(|s| f(&s.layer));
    let mut out = String::new();
    if uses(&|l| matches!(l, Layer::Res(_))) {
        out += "\n\nclass Residual(nn.Module):\n    \"\"\"input + body(input): a residual block.\"\"\"\n\n    def __init__(self, *layers):\n        super().__init__()\n        self.body = nn.Sequential(*layers)\n\n    def forward(self, x):\n        return x + self.body(x)\n";
    }
    if uses(&|l| matches!(l, Layer::Scale(_))) {
        out += "\n\nclass Scale(nn.Module):\n    \"\"\"Multiply by a constant.\"\"\"\n\n    def __init__(self, s):\n        super().__init__()\n        self.s = s\n\n    def forward(self, x):\n        return x * self.s\n";
    }
    if uses(&|l| matches!(l, Layer::BatchNorm { scale: false, .. })) {
        out += "\n\ndef fixed_scale(bn):\n    \"\"\"Batch norm with gamma fixed at 1 (tabcnn's bn(scale=0)).\"\"\"\n    bn.weight.requires_grad_(False)\n    return bn\n";
    }
    out += "\n\nnet = nn.Sequential(\n";
    let mut i = 0;
    for layer in &net.layers {
        out += &module(layer, steps, &mut i, 1);
    }
    out += ")\n";
    out
}

/// One layer's module, at `indent` levels, consuming its steps (a block's and its layers').
fn module(layer: &Layer, steps: &[Step], i: &mut usize, indent: usize) -> String {
    let pad = "    ".repeat(indent);
    let s = &steps[*i];
    *i += 1;
    let (c, shape) = (s.input.channels(), s.input);
    let opt = |v: &[(bool, String)]| v.iter().filter(|(on, _)| *on).map(|(_, t)| format!(", {t}")).collect::<String>();
    let line = match *layer {
        Layer::Conv { out, k, stride, pad: p, bias } => {
            format!("nn.Conv2d({c}, {out}, {k}{})", opt(&[(stride != 1, format!("stride={stride}")), (p != 0, format!("padding={p}")), (!bias, "bias=False".into())]))
        }
        Layer::Linear { out, bias } => format!("nn.Linear({c}, {out}{})", opt(&[(!bias, "bias=False".into())])),
        Layer::BatchNorm { momentum, eps, scale } => {
            let bn = format!(
                "nn.BatchNorm{}d({c}{})",
                if norm_is_2d(shape) { 2 } else { 1 },
                opt(&[(momentum != BN_MOMENTUM, format!("momentum={}", number(momentum))), (eps != BN_EPS, format!("eps={}", number(eps)))])
            );
            if scale {
                bn
            } else {
                format!("fixed_scale({bn})")
            }
        }
        Layer::Act(a) => match a {
            Act::Relu => "nn.ReLU()",
            Act::Gelu => "nn.GELU()",
            Act::Tanh => "nn.Tanh()",
            Act::Sigmoid => "nn.Sigmoid()",
        }
        .into(),
        Layer::Pool { kind, k, stride } => format!("nn.{}Pool2d({k}{})", if kind == Pool::Max { "Max" } else { "Avg" }, opt(&[(stride != k, format!("stride={stride}"))])),
        Layer::Gap => "nn.AdaptiveAvgPool2d(1)".into(),
        Layer::Flatten => "nn.Flatten()".into(),
        Layer::Dropout(p) => format!("nn.Dropout({})", number(p)),
        Layer::Scale(v) => format!("Scale({})", number(v)),
        Layer::Res(ref inner) => {
            let mut body = format!("{pad}Residual(\n");
            for l in inner {
                body += &module(l, steps, i, indent + 1);
            }
            return body + &format!("{pad}),\n");
        }
    };
    format!("{pad}{line},  # {} -> {}\n", s.place.position, s.output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::text::parse;

    #[test]
    fn lenet_is_the_tutorials_net() {
        let p = program(&parse("lenet").unwrap()).unwrap();
        assert!(p.contains("class Net(nn.Module):") && p.contains("self.fc1 = nn.Linear(16 * 5 * 5, 120)") && p.contains("net = Net()"), "{p}");
        assert!(p.contains("    \"conv1.weight\": [6, 3, 5, 5],") && p.contains("    \"fc3.bias\": [10],"), "{p}");
    }

    #[test]
    fn a_network_with_blocks_is_an_nn_sequential_with_its_names() {
        let net = parse("conv(24,2,bias=0) gelu res(conv(24,3,pad=1,bias=0) bn(scale=0) gelu) maxpool(3,stride=2) flatten bn(eps=0.001) linear(10,bias=0) scale(0.5)").unwrap();
        let p = program(&net).unwrap();
        println!("{p}");
        for want in [
            "    nn.Conv2d(3, 24, 2, bias=False),  # 1 -> 24x31x31",
            "    Residual(\n        nn.Conv2d(24, 24, 3, padding=1, bias=False),  # 3.1 -> 24x31x31\n        fixed_scale(nn.BatchNorm2d(24)),  # 3.2 -> 24x31x31\n        nn.GELU(),  # 3.3 -> 24x31x31\n    ),",
            "    nn.MaxPool2d(3, stride=2),  # 4 -> 24x15x15",
            "    nn.BatchNorm1d(5400, eps=0.001),",
            "    nn.Linear(5400, 10, bias=False),",
            "    Scale(0.5),",
            "    \"2.body.1.running_var\": [24],",
            "    \"2.body.1.num_batches_tracked\": [],",
            "class Residual(nn.Module):",
            "def fixed_scale(bn):",
        ] {
            assert!(p.contains(want), "missing {want:?}");
        }
        // Every tensor of the model file is named in the program's check, and nothing else.
        let params = Params::new(&net, &net.infer().unwrap());
        let named = p.lines().filter(|l| l.starts_with("    \"") && l.ends_with("],")).count();
        assert_eq!(named, params.params.len() + params.buffers.len() + params.batches_tracked.len());
    }

    /// The programs are Python, where a python3 is on the machine (CI has one).
    #[test]
    fn the_programs_are_python() {
        let Ok(v) = std::process::Command::new("python3").arg("--version").output() else {
            println!("no python3 here: the syntax is not checked");
            return;
        };
        println!("{}", String::from_utf8_lossy(&v.stdout).trim());
        for t in ["lenet", "conv(8,3,pad=1) bn relu res(conv(8,3,pad=1) bn(scale=0) relu res(conv(8,1) tanh)) gap flatten dropout(0.5) linear(10) scale(0.125)"] {
            let p = program(&parse(t).unwrap()).unwrap();
            let path = std::env::temp_dir().join(format!("tabcnn-net-{}.py", std::process::id()));
            std::fs::write(&path, &p).unwrap();
            let r = std::process::Command::new("python3").args(["-m", "py_compile"]).arg(&path).output().unwrap();
            let _ = std::fs::remove_file(&path);
            assert!(r.status.success(), "{t}: {}\n{p}", String::from_utf8_lossy(&r.stderr));
        }
    }

    /// The program's state_dict check names exactly the tensors (and shapes) of the model file
    /// tabcnn saves for the network: what `load_state_dict` needs.
    #[test]
    fn the_programs_names_and_shapes_are_the_model_files() {
        for t in ["lenet", "conv(8,3,pad=1,bias=0) bn(scale=0) gelu res(conv(8,3,pad=1) bn relu res(conv(8,1) tanh)) maxpool(2) flatten bn linear(10,bias=0) scale(0.125)"] {
            let net = parse(t).unwrap();
            let p = program(&net).unwrap();
            let expected: std::collections::BTreeMap<String, Vec<usize>> = p
                .lines()
                .filter(|l| l.starts_with("    \"") && l.ends_with("],"))
                .map(|l| {
                    let (name, shape) = l.trim().trim_end_matches(',').split_once(": ").unwrap();
                    let dims = shape.trim_matches(|c| c == '[' || c == ']').split(", ").filter(|d| !d.is_empty()).map(|d| d.parse().unwrap()).collect();
                    (name.trim_matches('"').to_string(), dims)
                })
                .collect();
            let params = Params::new(&net, &net.infer().unwrap());
            let file = crate::checkpoint::to_safetensors_net(&params.init(0), &params.init_buffers(), 0, &params, t);
            let st = safetensors::SafeTensors::deserialize(&file).unwrap();
            let in_file: std::collections::BTreeMap<String, Vec<usize>> = st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec())).collect();
            assert_eq!(expected, in_file, "{t}");
        }
    }
}
