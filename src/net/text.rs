//! The text form of a network: one line used by the link (`net=`), the CLI (`--net`), saved
//! runs and model files. Layers are separated by spaces (a `+` in a link is a space); each is a
//! name, or a name with arguments in parentheses, with PyTorch's meaning and defaults:
//!
//! `conv(OUT,K)` (options `stride=S`, `pad=P`, `bias=0`), `bn` (`momentum=M`, `eps=E`,
//! `scale=0`), `relu`, `gelu`, `tanh`, `sigmoid`, `maxpool(K)` and `avgpool(K)` (`stride=S`),
//! `gap`, `flatten`, `linear(OUT)` (`bias=0`), `dropout(P)`, `scale(S)`, `res(LAYERS...)`.
//!
//! `lenet` and `wide` name their texts, and the four widths of the LeNet-shaped networks of
//! earlier links (`C1-C2-F1-F2`, e.g. `256-256-256-256`) still name theirs. Printing gives the
//! canonical text (defaults left out), which parses back to the same network.

use super::{Act, Layer, Net, Pool, MAX_DEPTH, MAX_KERNEL, MAX_LAYERS, MAX_STRIDE, MAX_UNITS};
use crate::model::Arch;

/// The longest text accepted: MAX_LAYERS layers of the longest canonical text (about 46
/// characters) fit, so whatever parses prints a text that parses back.
pub const MAX_TEXT: usize = 16384;

/// PyTorch's batch norm defaults.
pub const BN_MOMENTUM: f32 = 0.1;
pub const BN_EPS: f32 = 1e-5;

/// The tutorial's LeNet in the text form.
pub const LENET: &str = "conv(6,5) relu maxpool(2) conv(16,5) relu maxpool(2) flatten linear(120) relu linear(84) relu linear(10)";

/// The layer names, for the error that meets an unknown one.
const NAMES: &str = "conv, bn, relu, gelu, tanh, sigmoid, maxpool, avgpool, gap, flatten, linear, dropout, scale, res";

/// The LeNet-shaped network of four widths (conv C1 and C2 5x5, each with ReLU and a 2x2 max
/// pool, then linear F1, F2 and 10): `lenet` is 6-16-120-84, `wide` 20-32-256-128.
pub fn lenet_shaped(a: Arch) -> Net {
    let conv = |out| Layer::Conv { out, k: 5, stride: 1, pad: 0, bias: true };
    let linear = |out| Layer::Linear { out, bias: true };
    let (relu, pool) = (Layer::Act(Act::Relu), Layer::Pool { kind: Pool::Max, k: 2, stride: 2 });
    Net { layers: vec![conv(a.c1), relu.clone(), pool.clone(), conv(a.c2), relu.clone(), pool, Layer::Flatten, linear(a.f1), relu.clone(), linear(a.f2), relu, linear(10)] }
}

/// The widths of a LeNet-shaped network, if `net` is one (its files keep the tutorial's names).
pub fn as_lenet_shaped(net: &Net) -> Option<Arch> {
    let (c1, c2, f1, f2) = match net.layers[..] {
        [Layer::Conv { out: c1, .. }, _, _, Layer::Conv { out: c2, .. }, _, _, _, Layer::Linear { out: f1, .. }, _, Layer::Linear { out: f2, .. }, _, _] => (c1, c2, f1, f2),
        _ => return None,
    };
    let a = Arch { c1, c2, f1, f2 };
    (lenet_shaped(a) == *net).then_some(a)
}

/// Parse a network's text (the names `lenet`, `wide` and `C1-C2-F1-F2` included). Errors name
/// the layer, its position and what is wrong. Shapes are checked by `Net::infer`.
pub fn parse(text: &str) -> Result<Net, String> {
    if text.len() > MAX_TEXT {
        return Err(format!("the network's text is {} characters long; at most {MAX_TEXT}", text.len()));
    }
    let t = text.trim();
    match t {
        "lenet" => return Ok(lenet_shaped(Arch::LENET)),
        "wide" => return Ok(lenet_shaped(Arch::WIDE)),
        _ => {}
    }
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return Arch::parse(t).map(lenet_shaped);
    }
    let mut p = Parser { s: t.as_bytes(), at: 0, count: 0 };
    let layers = p.layers("", 0)?;
    if p.at < p.s.len() {
        return Err(format!("character {}: ')' closes nothing", p.at + 1));
    }
    if layers.is_empty() {
        return Err("the network has no layers (try lenet, or conv(6,5) relu maxpool(2) ... linear(10))".into());
    }
    Ok(Net { layers })
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    /// Layers read so far, blocks' layers included.
    count: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.at < self.s.len() && (self.s[self.at] as char).is_whitespace() {
            self.at += 1;
        }
    }

    /// Layers up to the end or a ')' (not consumed), positions after `prefix`.
    fn layers(&mut self, prefix: &str, depth: usize) -> Result<Vec<Layer>, String> {
        let mut layers = Vec::new();
        loop {
            self.skip_space();
            if self.at >= self.s.len() || self.s[self.at] == b')' {
                return Ok(layers);
            }
            let position = format!("{prefix}{}", layers.len() + 1);
            self.count += 1;
            if self.count > MAX_LAYERS {
                return Err(format!("layer {position}: a network has at most {MAX_LAYERS} layers"));
            }
            layers.push(self.layer(&position, depth)?);
        }
    }

    /// One layer: a name, then its arguments in parentheses if any.
    fn layer(&mut self, position: &str, depth: usize) -> Result<Layer, String> {
        let start = self.at;
        while self.at < self.s.len() && (self.s[self.at].is_ascii_alphanumeric() || self.s[self.at] == b'_') {
            self.at += 1;
        }
        let name = String::from_utf8_lossy(&self.s[start..self.at]).to_string();
        if name.is_empty() {
            let c = String::from_utf8_lossy(&self.s[self.at..]).chars().next().unwrap_or(' ');
            return Err(format!("layer {position}: '{c}' at character {} starts no layer (layers: {NAMES})", self.at + 1));
        }
        if self.at >= self.s.len() || self.s[self.at] != b'(' {
            return build(&name, &[], position);
        }
        let open = self.at;
        self.at += 1;
        if name == "res" {
            if depth + 1 > MAX_DEPTH {
                return Err(format!("layer {position}: blocks nest at most {MAX_DEPTH} deep"));
            }
            let inner = self.layers(&format!("{position}."), depth + 1)?;
            self.close(open, position, "res")?;
            if inner.is_empty() {
                return Err(format!("layer {position}, res(): a residual block needs layers, as res(conv(64,3,pad=1) bn relu)"));
            }
            return Ok(Layer::Res(inner));
        }
        let args_start = self.at;
        while self.at < self.s.len() && !matches!(self.s[self.at], b')' | b'(') {
            self.at += 1;
        }
        let args = String::from_utf8_lossy(&self.s[args_start..self.at]).to_string();
        if self.at < self.s.len() && self.s[self.at] == b'(' {
            return Err(format!("layer {position}, {name}: only res(...) holds layers; '(' at character {} is inside {name}'s arguments", self.at + 1));
        }
        self.close(open, position, &name)?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        let args: Vec<&str> = if args == [""] { Vec::new() } else { args };
        build(&name, &args, position)
    }

    fn close(&mut self, open: usize, position: &str, name: &str) -> Result<(), String> {
        if self.at >= self.s.len() || self.s[self.at] != b')' {
            return Err(format!("layer {position}, {name}: the '(' at character {} is never closed", open + 1));
        }
        self.at += 1;
        Ok(())
    }
}

/// A layer from its name and arguments (positional first, then name=value options).
fn build(name: &str, args: &[&str], position: &str) -> Result<Layer, String> {
    let text = if args.is_empty() { name.to_string() } else { format!("{name}({})", args.join(",")) };
    let err = |why: String| format!("layer {position}, {text}: {why}");
    let (mut positional, mut options) = (Vec::new(), Vec::new());
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => options.push((k.trim(), v.trim())),
            None if options.is_empty() => positional.push(*a),
            None => return Err(err(format!("'{a}' comes after an option: give OUT, K and such first, then name=value options"))),
        }
    }
    let usage = match name {
        "conv" => "conv(OUT,K), options stride=S, pad=P, bias=0",
        "bn" => "bn, options momentum=M, eps=E, scale=0",
        "maxpool" | "avgpool" => "maxpool(K) or avgpool(K), option stride=S",
        "linear" => "linear(OUT), option bias=0",
        "dropout" => "dropout(P), 0 <= P < 1",
        "scale" => "scale(S)",
        "relu" | "gelu" | "tanh" | "sigmoid" | "gap" | "flatten" => "no arguments",
        "res" => return Err(format!("layer {position}, res: a residual block takes its layers in parentheses, with no space before '(': res(conv(64,3,pad=1) bn relu)")),
        _ => return Err(format!("layer {position}: '{name}' is not a layer (layers: {NAMES})")),
    };
    let wants = match name {
        "conv" => 2,
        "maxpool" | "avgpool" | "linear" | "dropout" | "scale" => 1,
        _ => 0,
    };
    if positional.len() != wants {
        return Err(err(format!("{} given; it takes {usage}", count(positional.len(), "number"))));
    }
    let allowed: &[&str] = match name {
        "conv" => &["stride", "pad", "bias"],
        "bn" => &["momentum", "eps", "scale"],
        "maxpool" | "avgpool" => &["stride"],
        "linear" => &["bias"],
        _ => &[],
    };
    let mut seen = Vec::new();
    for (k, _) in &options {
        if !allowed.contains(k) {
            return Err(err(format!("'{k}' is not an option here; it takes {usage}")));
        }
        if seen.contains(k) {
            return Err(err(format!("'{k}' is given twice")));
        }
        seen.push(*k);
    }
    let option = |k: &str| options.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let whole = |what: &str, v: &str, lo: usize, hi: usize| -> Result<usize, String> {
        match v.parse::<usize>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(err(format!("{what} is a whole number from {lo} to {hi}, not '{v}'"))),
        }
    };
    let real = |what: &str, v: &str| -> Result<f32, String> { v.parse::<f32>().ok().filter(|x| x.is_finite()).ok_or_else(|| err(format!("{what} is a number, not '{v}'"))) };
    let flag = |k: &str| -> Result<bool, String> {
        match option(k) {
            None | Some("1") => Ok(true),
            Some("0") => Ok(false),
            Some(v) => Err(err(format!("{k} is 0 or 1, not '{v}'"))),
        }
    };
    Ok(match name {
        "conv" => {
            let k = whole("K (the kernel)", positional[1], 1, MAX_KERNEL)?;
            Layer::Conv {
                out: whole("OUT (the filters)", positional[0], 1, MAX_UNITS)?,
                k,
                stride: option("stride").map_or(Ok(1), |v| whole("stride", v, 1, MAX_STRIDE))?,
                pad: option("pad").map_or(Ok(0), |v| whole("pad", v, 0, k.saturating_sub(1)))?,
                bias: flag("bias")?,
            }
        }
        "bn" => {
            let momentum = option("momentum").map_or(Ok(BN_MOMENTUM), |v| real("momentum", v))?;
            let eps = option("eps").map_or(Ok(BN_EPS), |v| real("eps", v))?;
            if !(0.0..=1.0).contains(&momentum) {
                return Err(err(format!("momentum is from 0 to 1, not {momentum}")));
            }
            if !(eps > 0.0 && eps <= 1.0) {
                return Err(err(format!("eps is above 0 and at most 1, not {eps}")));
            }
            Layer::BatchNorm { momentum, eps, scale: flag("scale")? }
        }
        "relu" => Layer::Act(Act::Relu),
        "gelu" => Layer::Act(Act::Gelu),
        "tanh" => Layer::Act(Act::Tanh),
        "sigmoid" => Layer::Act(Act::Sigmoid),
        "maxpool" | "avgpool" => {
            let k = whole("K (the window)", positional[0], 1, MAX_KERNEL)?;
            let kind = if name == "maxpool" { Pool::Max } else { Pool::Avg };
            Layer::Pool { kind, k, stride: option("stride").map_or(Ok(k), |v| whole("stride", v, 1, MAX_STRIDE.max(k)))? }
        }
        "gap" => Layer::Gap,
        "flatten" => Layer::Flatten,
        "linear" => Layer::Linear { out: whole("OUT (the units)", positional[0], 1, MAX_UNITS)?, bias: flag("bias")? },
        "dropout" => {
            let p = real("P", positional[0])?;
            if !(0.0..1.0).contains(&p) {
                return Err(err(format!("P is a probability, at least 0 and under 1, not {p}")));
            }
            Layer::Dropout(p)
        }
        "scale" => Layer::Scale(real("S", positional[0])?),
        _ => unreachable!("names checked above"),
    })
}

fn count(n: usize, what: &str) -> String {
    match n {
        0 => format!("no {what}s"),
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// A number in an exact form no longer than 14 characters: plain (0.001), or with an exponent
/// (1e-45) where plain would pass 10 characters; Python reads both.
pub fn number(x: f32) -> String {
    let (plain, exp) = (format!("{x}"), format!("{x:e}"));
    if plain.len() > 10 && exp.len() < plain.len() {
        exp
    } else {
        plain
    }
}

/// One layer's canonical text (defaults left out).
pub fn layer_text(layer: &Layer) -> String {
    let opts = |name: &str, positional: Vec<String>, options: Vec<String>| {
        let all: Vec<String> = positional.into_iter().chain(options).collect();
        if all.is_empty() {
            name.to_string()
        } else {
            format!("{name}({})", all.join(","))
        }
    };
    match layer {
        Layer::Conv { out, k, stride, pad, bias } => {
            let mut o = Vec::new();
            if *stride != 1 {
                o.push(format!("stride={stride}"));
            }
            if *pad != 0 {
                o.push(format!("pad={pad}"));
            }
            if !bias {
                o.push("bias=0".into());
            }
            opts("conv", vec![out.to_string(), k.to_string()], o)
        }
        Layer::BatchNorm { momentum, eps, scale } => {
            let mut o = Vec::new();
            if *momentum != BN_MOMENTUM {
                o.push(format!("momentum={}", number(*momentum)));
            }
            if *eps != BN_EPS {
                o.push(format!("eps={}", number(*eps)));
            }
            if !scale {
                o.push("scale=0".into());
            }
            opts("bn", vec![], o)
        }
        Layer::Act(a) => match a {
            Act::Relu => "relu",
            Act::Gelu => "gelu",
            Act::Tanh => "tanh",
            Act::Sigmoid => "sigmoid",
        }
        .into(),
        Layer::Pool { kind, k, stride } => {
            let name = if *kind == Pool::Max { "maxpool" } else { "avgpool" };
            opts(name, vec![k.to_string()], if stride != k { vec![format!("stride={stride}")] } else { vec![] })
        }
        Layer::Gap => "gap".into(),
        Layer::Flatten => "flatten".into(),
        Layer::Linear { out, bias } => opts("linear", vec![out.to_string()], if *bias { vec![] } else { vec!["bias=0".into()] }),
        Layer::Dropout(p) => format!("dropout({})", number(*p)),
        Layer::Scale(s) => format!("scale({})", number(*s)),
        Layer::Res(inner) => format!("res({})", inner.iter().map(layer_text).collect::<Vec<_>>().join(" ")),
    }
}

/// The network's canonical text: `lenet` and `wide` by name, others layer by layer.
pub fn print(net: &Net) -> String {
    match as_lenet_shaped(net) {
        Some(Arch::LENET) => "lenet".into(),
        Some(Arch::WIDE) => "wide".into(),
        _ => net.layers.iter().map(layer_text).collect::<Vec<_>>().join(" "),
    }
}

/// The network written out layer by layer, even where it has a name.
pub fn print_layers(net: &Net) -> String {
    net.layers.iter().map(layer_text).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tutorials_lenet_is_lenet() {
        assert_eq!(parse(LENET).unwrap(), parse("lenet").unwrap());
        assert_eq!(print(&parse(LENET).unwrap()), "lenet");
        assert_eq!(print_layers(&parse("lenet").unwrap()), LENET);
        assert_eq!(as_lenet_shaped(&parse("wide").unwrap()), Some(Arch::WIDE));
        // The widths of earlier links name their LeNet-shaped networks.
        let a = Arch { c1: 256, c2: 256, f1: 256, f2: 256 };
        assert_eq!(parse("256-256-256-256").unwrap(), lenet_shaped(a));
        assert_eq!(as_lenet_shaped(&parse("conv(6,5) relu maxpool(2) conv(16,5) relu maxpool(2) flatten linear(120) relu linear(84) tanh linear(10)").unwrap()), None);
    }

    /// The link and the CLI take the text form for what the engines train (LeNet-shaped
    /// networks), and say what they take for any other.
    #[test]
    fn the_link_takes_the_text_of_lenet_shaped_networks() {
        assert_eq!(Arch::parse(LENET), Ok(Arch::LENET));
        let wide = "conv(20,5) relu maxpool(2) conv(32,5) relu maxpool(2) flatten linear(256) relu linear(128) relu linear(10)";
        assert_eq!(Arch::parse(wide), Ok(Arch::WIDE));
        let (s, problems) = crate::recipe::Settings::from_query(&format!("?net={}", wide.replace(' ', "+")));
        assert_eq!((s.hyper.net, problems), (Arch::WIDE, vec![]));
        assert_eq!(s.to_query(), "?batch=4&lr=0.001&momentum=0.9&weight-decay=0&epochs=2&seed=0&data=sample&net=wide");
        let e = Arch::parse("conv(6,5) relu maxpool(2) flatten linear(10)").unwrap_err();
        assert!(e.starts_with("the engines train LeNet-shaped networks so far"), "{e}");
        let e = Arch::parse(&LENET.replace("conv(6,5)", "conv(300,5)")).unwrap_err();
        assert!(e.contains("widths are 300, 16, 120 and 84; each is 1 to 256"), "{e}");
        assert!(Arch::parse("conv(6,5) relu maxpool(2) rellu").unwrap_err().contains("layer 4: 'rellu' is not a layer"));
    }

    #[test]
    fn every_network_round_trips_through_its_text() {
        let texts = [
            "lenet",
            "wide",
            "conv(24,2,bias=0) gelu conv(64,3,pad=1,bias=0) maxpool(2) bn(scale=0) gelu conv(64,3,pad=1,bias=0) bn(scale=0) gelu maxpool(3) flatten linear(10,bias=0) scale(0.11111111)",
            "conv(16,3,stride=2,pad=1) bn(momentum=0.6,eps=0.001) relu res(conv(16,3,pad=1) bn relu res(conv(16,1) tanh)) avgpool(2,stride=1) sigmoid gap flatten dropout(0.25) linear(10)",
        ];
        for t in texts {
            let n = parse(t).unwrap();
            assert_eq!(print(&n), t, "canonical text");
            assert_eq!(parse(&print_layers(&n)).unwrap(), n, "{t}");
        }
        // The longest numbers print short: the most layers of the longest text still parse back.
        for t in ["bn(momentum=1e-45,eps=1e-45) ", "scale(3.4028235e38) ", "dropout(0.99999994) "] {
            let n = parse(&t.repeat(MAX_LAYERS)).unwrap();
            let printed = print(&n);
            println!("{} layers of {t:?}: {} characters printed", MAX_LAYERS, printed.len());
            assert_eq!(parse(&printed).unwrap(), n);
        }
        assert_eq!((number(1e-45), number(0.25), number(1e19), number(123456789.0)), ("1e-45".into(), "0.25".into(), "1e19".into(), "123456790".into()));
        // Spaces, '+' decoded by the link, and defaults written out parse to the same network.
        let loose =
            parse("  conv( 6 , 5 , stride=1 , pad=0, bias=1 )   relu maxpool(2,stride=2) conv(16,5) relu maxpool(2) flatten linear(120) relu linear(84) relu linear(10) ").unwrap();
        assert_eq!(print(&loose), "lenet");
    }

    /// Every error says where and what.
    #[test]
    fn every_parse_error_names_the_layer_and_what_is_wrong() {
        let cases = [
            ("", "the network has no layers"),
            ("conv(6,5) rellu", "layer 2: 'rellu' is not a layer (layers: conv, bn, relu"),
            ("conv(6)", "layer 1, conv(6): 1 number given; it takes conv(OUT,K), options stride=S, pad=P, bias=0"),
            ("conv(6,5,7)", "layer 1, conv(6,5,7): 3 numbers given"),
            ("conv(0,5)", "layer 1, conv(0,5): OUT (the filters) is a whole number from 1 to 4096, not '0'"),
            ("conv(6,5,pad=5)", "layer 1, conv(6,5,pad=5): pad is a whole number from 0 to 4, not '5'"),
            ("conv(6,5,stride=0)", "stride is a whole number from 1 to 8, not '0'"),
            ("conv(6,5,bias=2)", "bias is 0 or 1, not '2'"),
            ("conv(6,5,padding=1)", "layer 1, conv(6,5,padding=1): 'padding' is not an option here"),
            ("conv(6,5,pad=1,pad=2)", "'pad' is given twice"),
            ("conv(6,pad=1,5)", "'5' comes after an option"),
            ("relu(1)", "layer 1, relu(1): 1 number given; it takes no arguments"),
            ("bn(momentum=2)", "momentum is from 0 to 1, not 2"),
            ("bn(eps=0)", "eps is above 0 and at most 1, not 0"),
            ("bn(eps=nan)", "eps is a number, not 'nan'"),
            ("dropout(1)", "P is a probability, at least 0 and under 1, not 1"),
            ("scale(inf)", "S is a number, not 'inf'"),
            ("maxpool(2", "layer 1, maxpool: the '(' at character 8 is never closed"),
            ("relu)", "character 5: ')' closes nothing"),
            ("res()", "layer 1, res(): a residual block needs layers"),
            ("res(relu conv(6,x))", "layer 1.2, conv(6,x): K (the kernel) is a whole number from 1 to 32, not 'x'"),
            ("conv(6,(5))", "layer 1, conv: only res(...) holds layers"),
            ("relu ~", "layer 2: '~' at character 6 starts no layer"),
            ("res(res(res(res(res(relu)))))", "layer 1.1.1.1.1: blocks nest at most 4 deep"),
            ("6-16-120", "the network is 'lenet', 'wide' or C1-C2-F1-F2"),
        ];
        for (t, want) in cases {
            let e = parse(t).unwrap_err();
            println!("{t:?} -> {e}");
            assert!(e.contains(want), "{t:?}: {e}");
        }
        assert!(parse("res (relu)").unwrap_err().contains("layer 1, res: a residual block takes its layers in parentheses"));
        assert_eq!(parse("maxpool(16,stride=16)").unwrap(), parse("maxpool(16)").unwrap());
        let many = vec!["relu"; MAX_LAYERS + 1].join(" ");
        assert!(parse(&many).unwrap_err().contains("at most 256 layers"));
        assert!(parse(&"relu ".repeat(4000)).unwrap_err().contains("characters long"));
    }
}
