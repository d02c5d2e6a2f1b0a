//! The LeNet of the PyTorch CIFAR-10 tutorial and its wider variant (`Arch`): their sizes, the
//! parameter layout (PyTorch state_dict names, shapes and order, packed into one f32 vector at
//! 64-float aligned offsets), PyTorch's default initialisation from a seeded RNG, and the
//! training hyperparameters.
//!
//! Dimension letters used everywhere (Rust, WGSL, comments): N batch, C input channels,
//! OC output channels, H/W input height/width, OH/OW output height/width, K kernel size,
//! IN/OUT linear features.

/// Image side and channels of a CIFAR-10 record.
pub const IMG: usize = 32;
pub const IMG_C: usize = 3;
/// Pixels of one record, CHW: 3 x 32 x 32.
pub const IMG_LEN: usize = IMG_C * IMG * IMG;
pub const CLASSES: usize = 10;

/// conv1: 3 -> 6, 5x5, on 32x32 -> 28x28; pool -> 14x14.
pub const C1_IN: usize = 3;
pub const C1_OUT: usize = 6;
pub const K: usize = 5;
pub const H1: usize = IMG - K + 1; // 28
pub const P1: usize = H1 / 2; // 14
/// conv2: 6 -> 16, 5x5, on 14x14 -> 10x10; pool -> 5x5.
pub const C2_OUT: usize = 16;
pub const H2: usize = P1 - K + 1; // 10
pub const P2: usize = H2 / 2; // 5
/// fc1 400 -> 120, fc2 120 -> 84, fc3 84 -> 10.
pub const FC1_IN: usize = C2_OUT * P2 * P2; // 400
pub const FC1_OUT: usize = 120;
pub const FC2_OUT: usize = 84;

/// The widest layer any network may have, everywhere (the link, the CLI, model files, saved
/// runs): 256 filters or units.
pub const MAX_WIDTH: usize = 256;

/// The network's widths (the constants above are LeNet's): conv1 3 -> C1, conv2 C1 -> C2 (5x5,
/// each followed by ReLU and a 2x2 max-pool), fc1 C2*5*5 -> F1, fc2 F1 -> F2, fc3 F2 -> 10. The
/// same code trains the tutorial's LeNet and the wider variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Arch {
    pub c1: usize,
    pub c2: usize,
    pub f1: usize,
    pub f2: usize,
}

impl Arch {
    /// The PyTorch tutorial's LeNet: 6, 16, 120, 84 (62,006 parameters).
    pub const LENET: Arch = Arch { c1: C1_OUT, c2: C2_OUT, f1: FC1_OUT, f2: FC2_OUT };
    /// Whether every width is within 1..=MAX_WIDTH.
    pub fn in_limits(&self) -> bool {
        [self.c1, self.c2, self.f1, self.f2].iter().all(|w| (1..=MAX_WIDTH).contains(w))
    }
    /// The wider variant: 20 and 32 filters, fc 800 -> 256 -> 128 (about 264,000 parameters).
    /// Both engines train it (and any widths up to 256).
    pub const WIDE: Arch = Arch { c1: 20, c2: 32, f1: 256, f2: 128 };

    /// fc1's inputs: pool2's C2 x 5 x 5 maps, flattened.
    /// Multiply-adds of one image's forward: conv1, conv2 and the three linear layers.
    pub fn forward_macs(&self) -> u64 {
        let Arch { c1, c2, f1, f2 } = *self;
        let conv = c1 * H1 * H1 * C1_IN * K * K + c2 * H2 * H2 * c1 * K * K;
        (conv + self.fc1_in() * f1 + f1 * f2 + f2 * CLASSES) as u64
    }
    /// FLOPs of training on one image, by the usual count: the forward and the two halves of
    /// the backward (input and weight gradients) as many multiply-adds each, 2 FLOPs a
    /// multiply-add (LeNet: 3.9 MFLOP).
    pub fn train_flops_per_image(&self) -> u64 {
        6 * self.forward_macs()
    }
    pub fn fc1_in(&self) -> usize {
        self.c2 * P2 * P2
    }
    /// "lenet", "wide", or the widths.
    pub fn name(&self) -> String {
        match *self {
            Arch::LENET => "lenet".into(),
            Arch::WIDE => "wide".into(),
            a => format!("{}-{}-{}-{}", a.c1, a.c2, a.f1, a.f2),
        }
    }
    /// "lenet", "wide", or "C1-C2-F1-F2" (each 1 to MAX_WIDTH).
    pub fn parse(s: &str) -> Result<Arch, String> {
        match s {
            "lenet" => return Ok(Arch::LENET),
            "wide" => return Ok(Arch::WIDE),
            _ => {}
        }
        if s.contains('(') || s.trim().contains(' ') {
            return Arch::from_text(s);
        }
        let v: Vec<usize> = s
            .split('-')
            .map(|x| x.parse().ok().filter(|n| (1..=MAX_WIDTH).contains(n)))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("the network is 'lenet', 'wide' or C1-C2-F1-F2 (widths 1 to 256), not '{s}'"))?;
        match v[..] {
            [c1, c2, f1, f2] => Ok(Arch { c1, c2, f1, f2 }),
            _ => Err(format!("the network is 'lenet', 'wide' or C1-C2-F1-F2 (widths 1 to 256), not '{s}'")),
        }
    }
}

impl Arch {
    /// The widths of a network given in the text form (`net::text`), where it is LeNet-shaped:
    /// what the engines train today. Any other network is shown by `tabcnn net`, and refused
    /// here with what the engines take.
    pub fn from_text(s: &str) -> Result<Arch, String> {
        let net = crate::net::text::parse(s)?;
        net.infer()?;
        let a = crate::net::text::as_lenet_shaped(&net).ok_or_else(|| {
            format!(
                "the engines train LeNet-shaped networks so far: conv(C1,5) relu maxpool(2) conv(C2,5) relu maxpool(2) flatten linear(F1) relu linear(F2) relu linear(10), widths 1 to {MAX_WIDTH} (`tabcnn net` shows any network's shapes and its PyTorch program)"
            )
        })?;
        if !a.in_limits() {
            return Err(format!("the network's widths are {}, {}, {} and {}; each is 1 to {MAX_WIDTH}", a.c1, a.c2, a.f1, a.f2));
        }
        Ok(a)
    }
}

/// GPU storage-buffer bindings at an offset must be 256-byte aligned; we align every tensor
/// of the packed vectors to 64 floats so a tensor can be bound or copied on its own.
pub const ALIGN: usize = 64;

pub fn align_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// One parameter tensor of the packed vector.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// PyTorch state_dict name, e.g. "conv1.weight".
    pub name: &'static str,
    pub shape: Vec<usize>,
    /// Offset in floats in the packed vector (a multiple of ALIGN).
    pub offset: usize,
    /// fan_in of the layer: PyTorch's default init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fan_in: usize,
}

impl ParamSpec {
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

/// The ten tensors in state_dict order with their packed offsets.
#[derive(Clone, Debug)]
pub struct Layout {
    pub arch: Arch,
    pub specs: Vec<ParamSpec>,
    /// Total packed length in floats (with alignment padding).
    pub total: usize,
}

/// Indices into `Layout::specs`, in state_dict order.
pub const CONV1_W: usize = 0;
pub const CONV1_B: usize = 1;
pub const CONV2_W: usize = 2;
pub const CONV2_B: usize = 3;
pub const FC1_W: usize = 4;
pub const FC1_B: usize = 5;
pub const FC2_W: usize = 6;
pub const FC2_B: usize = 7;
pub const FC3_W: usize = 8;
pub const FC3_B: usize = 9;

impl Layout {
    /// The tutorial's LeNet.
    pub fn lenet() -> Layout {
        Layout::new(Arch::LENET)
    }

    pub fn new(arch: Arch) -> Layout {
        let Arch { c1, c2, f1, f2 } = arch;
        let fc1_in = arch.fc1_in();
        let defs: [(&'static str, Vec<usize>, usize); 10] = [
            ("conv1.weight", vec![c1, C1_IN, K, K], C1_IN * K * K),
            ("conv1.bias", vec![c1], C1_IN * K * K),
            ("conv2.weight", vec![c2, c1, K, K], c1 * K * K),
            ("conv2.bias", vec![c2], c1 * K * K),
            ("fc1.weight", vec![f1, fc1_in], fc1_in),
            ("fc1.bias", vec![f1], fc1_in),
            ("fc2.weight", vec![f2, f1], f1),
            ("fc2.bias", vec![f2], f1),
            ("fc3.weight", vec![CLASSES, f2], f2),
            ("fc3.bias", vec![CLASSES], f2),
        ];
        let mut offset = 0;
        let mut specs = Vec::new();
        for (name, shape, fan_in) in defs {
            let spec = ParamSpec { name, shape, offset, fan_in };
            offset = align_up(offset + spec.len());
            specs.push(spec);
        }
        Layout { arch, specs, total: offset }
    }

    /// Number of real parameters (62,006 for LeNet), without padding.
    pub fn count(&self) -> usize {
        self.specs.iter().map(|s| s.len()).sum()
    }

    pub fn spec(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }
}

/// A small, portable, seeded RNG (SplitMix64 seeding a xoshiro256**): the same stream natively
/// and in wasm, so a seed names one run everywhere.
#[derive(Clone, Debug, PartialEq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    /// The generator's whole state (a saved run continues the same stream).
    pub fn state(&self) -> [u64; 4] {
        self.s
    }
    pub fn from_state(s: [u64; 4]) -> Rng {
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = (self.s[1].wrapping_mul(5)).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f64() as f32
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift, bias negligible for n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// A Fisher-Yates shuffle of 0..n: one epoch's order.
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }
}

/// PyTorch's default initialisation for Conv2d and Linear (kaiming_uniform with a=sqrt(5) for
/// the weight, which is U(+-1/sqrt(fan_in)), and U(+-1/sqrt(fan_in)) for the bias), drawn from
/// `Rng::new(seed)` tensor by tensor in state_dict order. Padding stays zero.
pub fn init_params(layout: &Layout, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut p = vec![0.0f32; layout.total];
    for s in &layout.specs {
        let bound = 1.0 / (s.fan_in as f32).sqrt();
        for v in &mut p[s.range()] {
            *v = rng.uniform(-bound, bound);
        }
    }
    p
}

/// A batch-mean loss above this means the run diverged (chance level is ln 10 = 2.3); NaN and
/// infinity do too. Mirrored in shaders/cross_entropy.wgsl.
pub const DIVERGED_LOSS: f32 = 1e4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_pytorch_state_dict() {
        let l = Layout::lenet();
        assert_eq!(l.count(), 62006);
        let names: Vec<_> = l.specs.iter().map(|s| s.name).collect();
        assert_eq!(names[0], "conv1.weight");
        assert_eq!(names[9], "fc3.bias");
        for s in &l.specs {
            assert_eq!(s.offset % ALIGN, 0);
        }
        assert_eq!(l.spec("fc1.weight").unwrap().shape, vec![120, 400]);
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let l = Layout::lenet();
        let a = init_params(&l, 7);
        assert_eq!(a, init_params(&l, 7));
        assert_ne!(a, init_params(&l, 8));
        for s in &l.specs {
            let b = 1.0 / (s.fan_in as f32).sqrt();
            let vals = &a[s.range()];
            assert!(vals.iter().all(|v| v.abs() <= b));
            // Uses the whole range, not a sliver of it.
            let max = vals.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max > 0.5 * b, "{} max {max} bound {b}", s.name);
        }
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut r = Rng::new(1);
        let mut p = r.permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<u32>>());
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }
}
