//! The recipe: what a run is set to (`Hyper`: batch, learning rate and its `Schedule`,
//! momentum, weight decay, epochs, seed, augmentation, network), the settings a link or the
//! CLI gives and their one validator (`Settings::set`: the page and the CLI refuse the same
//! values with the same words), and the PyTorch recipe's reference figures.

use crate::model::{Arch, CLASSES};
use serde::{Deserialize, Serialize};

/// The PyTorch recipe on the shared copy of CIFAR-10 (../shared/data/README.md): test accuracy
/// with seeds 0, 1, 2, and per class (in class order) with seed 0, in per cent. The page shows
/// them beside its own figures.
pub const REFERENCE_ACCURACY: [f64; 3] = [52.7, 55.8, 55.4];
pub const REFERENCE_CLASS_ACCURACY: [f64; CLASSES] = [45.4, 61.3, 38.4, 19.0, 33.3, 43.2, 83.6, 60.0, 87.5, 55.2];

/// The training recipe. Defaults are the PyTorch tutorial's (no augmentation, constant rate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub batch: usize,
    /// The base learning rate (the schedule scales it per epoch).
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub epochs: usize,
    pub seed: u64,
    /// Random horizontal flips of the training images.
    pub flip: bool,
    /// Random 32x32 crops of the training images padded by 4 pixels.
    pub crop: bool,
    pub schedule: Schedule,
    /// The network's widths (LeNet unless asked), where it is LeNet-shaped.
    pub net: Arch,
    /// Any other network, in the text form (`net::text`, printed canonically): trained by the
    /// CPU engine's loop over its layers. None: the network is `net`.
    #[serde(default)]
    pub layers: Option<String>,
    /// Label smoothing of the loss (PyTorch's `label_smoothing`; 0: the plain loss).
    #[serde(default)]
    pub label_smoothing: f32,
    /// Nesterov momentum (PyTorch's SGD `nesterov=True`).
    #[serde(default)]
    pub nesterov: bool,
    /// Learning-rate multipliers of the parameter groups: weights, biases (of convolutions and
    /// linear layers), batch norm's parameters. A group trains at lr x its multiplier with
    /// weight decay / its multiplier, so lr x weight decay is the same for every group (as the
    /// airbench recipe sets its groups).
    #[serde(default = "no_groups")]
    pub lr_groups: [f32; 3],
    /// The optimizer: SGD (the tutorial's) or AdamW.
    #[serde(default)]
    pub optimizer: Optimizer,
}

/// The optimizer of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Optimizer {
    /// PyTorch's SGD: momentum (Nesterov's where asked) and weight decay added to the gradient.
    #[default]
    Sgd,
    /// PyTorch's AdamW with its defaults betas (0.9, 0.999) and eps 1e-8: the weight decay
    /// decoupled, p -= lr wd p, then the Adam step with bias correction.
    AdamW,
}

/// AdamW's betas and eps (PyTorch's defaults).
pub const ADAM_BETAS: (f32, f32) = (0.9, 0.999);
pub const ADAM_EPS: f32 = 1e-8;

fn no_groups() -> [f32; 3] {
    [1.0; 3]
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper {
            batch: 4,
            lr: 0.001,
            momentum: 0.9,
            weight_decay: 0.0,
            epochs: 2,
            seed: 0,
            flip: false,
            crop: false,
            schedule: Schedule::Constant,
            net: Arch::LENET,
            layers: None,
            label_smoothing: 0.0,
            nesterov: false,
            lr_groups: no_groups(),
            optimizer: Optimizer::Sgd,
        }
    }
}

impl Hyper {
    /// The network to train by the engines of any network, in the text form: `layers`, or
    /// LeNet's widths as text where the recipe asks for what only those engines do (label
    /// smoothing, Nesterov, parameter groups, a warm-up schedule); None where LeNet's own
    /// engines train it.
    pub fn layers_text(&self) -> Option<String> {
        match &self.layers {
            Some(t) => Some(t.clone()),
            None if self.beyond_lenet_engines() => Some(crate::net::text::print(&crate::net::text::lenet_shaped(self.net))),
            None => None,
        }
    }

    /// Whether the recipe asks for what only the engines of any network do: label smoothing,
    /// Nesterov, parameter groups, AdamW, a warm-up schedule.
    pub fn beyond_lenet_engines(&self) -> bool {
        self.label_smoothing > 0.0 || self.nesterov || self.lr_groups != no_groups() || self.optimizer != Optimizer::Sgd || matches!(self.schedule, Schedule::Warmup { .. })
    }

    /// The learning rate of epoch `epoch` (1-based) under the schedule.
    pub fn lr_at(&self, epoch: usize) -> f32 {
        self.schedule.lr(self.lr, epoch, self.epochs)
    }
    /// The augmentation of epoch `epoch` (1-based).
    pub fn augment_at(&self, epoch: usize) -> crate::augment::Augment {
        crate::augment::Augment { flip: self.flip, crop: self.crop, key: crate::augment::epoch_key(self.seed, epoch) }
    }
}

/// How the learning rate changes over the epochs of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// The recipe: the same rate throughout.
    #[default]
    Constant,
    /// Multiplied by `gamma` every `every` epochs (PyTorch's StepLR, stepped per epoch).
    Step { every: usize, gamma: f32 },
    /// Cosine from the base rate down to 0 over the run (CosineAnnealingLR with T_max = the
    /// epochs, eta_min 0, stepped per epoch).
    Cosine,
    /// Per step: the base rate times a factor rising linearly from `start` to 1 over the first
    /// `warm` of the run's steps, then falling linearly to `end` at its last (the airbench
    /// recipe's warmup:0.23:0.2:0.07). Trained by the engines of any network.
    Warmup { warm: f32, start: f32, end: f32 },
}

impl Schedule {
    /// The learning rate of epoch `epoch` (1-based) of `epochs`.
    pub fn lr(&self, base: f32, epoch: usize, epochs: usize) -> f32 {
        let e = epoch.saturating_sub(1);
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((e / every.max(1)) as i32),
            Schedule::Cosine => {
                let t = e as f64 / epochs.max(1) as f64;
                (base as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
            // per step, by the engine (`step_factor`)
            Schedule::Warmup { .. } => base,
        }
    }

    /// The factor of step `step` (0-based) of a run of `total` steps: 1 for the schedules set
    /// per epoch; for Warmup the interpolation of [start, 1, end] at [0, warm * total, total]
    /// (numpy's interp, as the airbench reference computes it).
    pub fn step_factor(&self, step: u64, total: u64) -> f32 {
        let Schedule::Warmup { warm, start, end } = *self else { return 1.0 };
        let (s, t) = (step as f64, total.max(1) as f64);
        let w = (warm as f64 * t).floor();
        let f = if s < w {
            start as f64 + (1.0 - start as f64) * s / w
        } else if t > w {
            1.0 + (end as f64 - 1.0) * (s - w).min(t - w) / (t - w)
        } else {
            end as f64
        };
        f as f32
    }

    /// "constant", "step:EVERY:GAMMA" (e.g. step:10:0.1), "cosine" or "warmup:WARM:START:END"
    /// (e.g. warmup:0.23:0.2:0.07).
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let bad = || format!("schedule '{s}': expected constant, cosine, step:EVERY:GAMMA (e.g. step:10:0.1) or warmup:WARM:START:END (e.g. warmup:0.23:0.2:0.07)");
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            _ if s.starts_with("warmup:") => {
                let v: Vec<f32> = s["warmup:".len()..].split(':').map(|x| x.parse().ok().filter(|v: &f32| v.is_finite() && *v >= 0.0)).collect::<Option<_>>().ok_or_else(bad)?;
                match v[..] {
                    [warm, start, end] if warm <= 1.0 => Ok(Schedule::Warmup { warm, start, end }),
                    _ => Err(bad()),
                }
            }
            _ => {
                let mut it = s.strip_prefix("step:").ok_or_else(bad)?.split(':');
                let every: usize = it.next().and_then(|v| v.parse().ok()).filter(|&v| v > 0).ok_or_else(bad)?;
                let gamma: f32 = it.next().and_then(|v| v.parse().ok()).filter(|v: &f32| v.is_finite() && *v > 0.0).ok_or_else(bad)?;
                if it.next().is_some() {
                    return Err(bad());
                }
                Ok(Schedule::Step { every, gamma })
            }
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            Schedule::Cosine => write!(f, "cosine"),
            Schedule::Warmup { warm, start, end } => write!(f, "warmup:{warm}:{start}:{end}"),
        }
    }
}

/// "none", "flip", "crop" or "flip,crop" -> (flip, crop).
pub fn parse_augment(v: &str) -> Result<(bool, bool), String> {
    match v {
        "none" | "" => Ok((false, false)),
        "flip" => Ok((true, false)),
        "crop" => Ok((false, true)),
        "flip,crop" | "crop,flip" | "both" => Ok((true, true)),
        _ => Err(format!("augment '{v}': expected none, flip, crop or flip,crop")),
    }
}

/// The text `parse_augment` reads for (flip, crop).
pub fn augment_name(flip: bool, crop: bool) -> &'static str {
    match (flip, crop) {
        (false, false) => "none",
        (true, false) => "flip",
        (false, true) => "crop",
        (true, true) => "flip,crop",
    }
}

/// Which dataset the page trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetChoice {
    /// The 2,000 + 1,000 records served beside the page (data/sample).
    Sample,
    /// The official cifar-10-binary.tar.gz, fetched from the page's server (data/).
    Full,
    /// An archive the visitor dropped on the page (a saved run's record says so; a link cannot
    /// load it: the page asks for the file).
    File,
}

impl DatasetChoice {
    /// As the link writes it.
    pub fn name(self) -> &'static str {
        match self {
            DatasetChoice::Sample => "sample",
            DatasetChoice::Full => "full",
            DatasetChoice::File => "file",
        }
    }
}

/// Which engine the page asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineChoice {
    /// WebGPU when the browser has it, else the CPU engine.
    Auto,
    Gpu,
    Cpu,
}

/// Everything a link can preset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub hyper: Hyper,
    pub dataset: DatasetChoice,
    pub engine: EngineChoice,
    pub autostart: bool,
    /// Train on the first N training images only (a quick demo, or a test).
    pub limit: Option<usize>,
    /// The page's one-screen layout for a projector (`view=projector`) instead of the long page.
    #[serde(default)]
    pub projector: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { hyper: Hyper::default(), dataset: DatasetChoice::Sample, engine: EngineChoice::Auto, autostart: false, limit: None, projector: false }
    }
}

/// Largest batch the page offers: the step's activations stay far below WebGPU's default 128 MiB
/// binding limit (batch 1024 is ~40 MiB of activations).
pub const MAX_BATCH: usize = 1024;
pub const MAX_EPOCHS: usize = 1000;

fn parse_num<T: std::str::FromStr>(shown: &str, v: &str, ok: impl Fn(&T) -> bool, rule: &str) -> Result<T, String> {
    match v.trim().parse::<T>() {
        Ok(x) if ok(&x) => Ok(x),
        _ => Err(format!("{shown}: {rule}")),
    }
}

impl Settings {
    /// Check one control's value (`key` as in the URL and the control ids) and set it; an
    /// error names it as the link does ("batch=0: ...").
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        self.set_shown(key, v, &format!("{key}={v}"))
    }

    /// `set` for a command-line flag: the same check and words, the flag named as typed
    /// ("--batch 0: ...").
    pub fn set_flag(&mut self, key: &str, v: &str) -> Result<(), String> {
        self.set_shown(key, v, &format!("--{key} {v}"))
    }

    /// The one validator of every setting; `shown` names the value in an error.
    pub fn set_shown(&mut self, key: &str, v: &str, shown: &str) -> Result<(), String> {
        let h = &mut self.hyper;
        match key {
            "batch" => h.batch = parse_num(shown, v, |b: &usize| (1..=MAX_BATCH).contains(b), "the batch size must be a whole number from 1 to 1024")?,
            "epochs" => h.epochs = parse_num(shown, v, |e: &usize| (1..=MAX_EPOCHS).contains(e), "epochs must be a whole number from 1 to 1000")?,
            "lr" => h.lr = parse_num(shown, v, |x: &f32| x.is_finite() && *x > 0.0, "the learning rate must be a number above 0")?,
            "momentum" => h.momentum = parse_num(shown, v, |x: &f32| (0.0..1.0).contains(x), "momentum must be a number from 0 to below 1")?,
            "weight-decay" | "weight_decay" | "wd" => h.weight_decay = parse_num(shown, v, |x: &f32| x.is_finite() && *x >= 0.0, "weight decay must be a number of 0 or more")?,
            "seed" => h.seed = parse_num(shown, v, |_: &u64| true, "the seed must be a whole number from 0")?,
            "limit" => self.limit = Some(parse_num(shown, v, |n: &usize| *n >= 1, "limit must be a whole number of training images, 1 or more")?),
            "data" | "dataset" => {
                self.dataset = match v {
                    "sample" => DatasetChoice::Sample,
                    "full" | "cifar10" => DatasetChoice::Full,
                    "file" => DatasetChoice::File,
                    _ => return Err(format!("{shown}: the dataset is 'sample' or 'full' (or 'file', a dropped archive, in a saved run)")),
                }
            }
            "engine" => {
                self.engine = match v {
                    "auto" => EngineChoice::Auto,
                    "gpu" => EngineChoice::Gpu,
                    "cpu" => EngineChoice::Cpu,
                    _ => return Err(format!("{shown}: the engine is 'auto', 'gpu' or 'cpu'")),
                }
            }
            "autostart" => self.autostart = matches!(v, "1" | "true" | "yes" | ""),
            "view" => {
                self.projector = match v {
                    "projector" => true,
                    "page" => false,
                    _ => return Err(format!("{shown}: the view is 'projector' (one screen) or 'page' (the long page)")),
                }
            }
            "augment" => (h.flip, h.crop) = parse_augment(v).map_err(|e| format!("{shown}: {e}"))?,
            "schedule" => h.schedule = Schedule::parse(v).map_err(|e| format!("{shown}: {e}"))?,
            "net" => (h.net, h.layers) = parse_net(v).map_err(|e| format!("{shown}: {e}"))?,
            "label-smoothing" => h.label_smoothing = parse_num(shown, v, |x: &f32| (0.0..1.0).contains(x), "label smoothing must be a number from 0 to below 1")?,
            "optimizer" => {
                h.optimizer = match v {
                    "sgd" => Optimizer::Sgd,
                    "adamw" => Optimizer::AdamW,
                    _ => return Err(format!("{shown}: the optimizer is 'sgd' or 'adamw'")),
                }
            }
            "lr-groups" => {
                let v: Vec<f32> = v.split(',').map(|x| x.trim().parse().ok().filter(|m: &f32| m.is_finite() && *m > 0.0)).collect::<Option<_>>().unwrap_or_default();
                h.lr_groups = v.try_into().map_err(|_| format!("{shown}: the learning-rate multipliers are three numbers above 0: weights,biases,norm (e.g. 1,64,64)"))?;
            }
            "nesterov" => {
                h.nesterov = match v {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(format!("{shown}: nesterov is 1 (on) or 0 (off)")),
                }
            }
            _ => {
                return Err(format!(
                    "{key}: unknown setting (known: batch, epochs, lr, momentum, weight-decay, seed, data, engine, limit, autostart, augment, schedule, net, label-smoothing, nesterov, lr-groups, optimizer, view)"
                ))
            }
        }
        Ok(())
    }

    /// Settings from a URL query (`?a=1&b=2` or `a=1&b=2`), starting from the recipe. A bad
    /// value keeps the default and is reported, so a mistyped link still opens a working page.
    pub fn from_query(query: &str) -> (Settings, Vec<String>) {
        let mut s = Settings::default();
        let mut problems = Vec::new();
        for pair in query.trim_start_matches('?').split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            if let Err(e) = s.set(k, &v) {
                problems.push(e);
            }
        }
        (s, problems)
    }

    /// The query that presets these settings: the link a teacher shares.
    pub fn to_query(&self) -> String {
        let h = &self.hyper;
        let mut q =
            format!("?batch={}&lr={}&momentum={}&weight-decay={}&epochs={}&seed={}&data={}", h.batch, h.lr, h.momentum, h.weight_decay, h.epochs, h.seed, self.dataset.name());
        if h.flip || h.crop {
            q += &format!("&augment={}", augment_name(h.flip, h.crop));
        }
        if h.schedule != Schedule::Constant {
            q += &format!("&schedule={}", h.schedule);
        }
        if let Some(text) = &h.layers {
            q += &format!("&net={}", query_encode(text));
        } else if h.net != Arch::LENET {
            q += &format!("&net={}", h.net.name());
        }
        if h.label_smoothing > 0.0 {
            q += &format!("&label-smoothing={}", h.label_smoothing);
        }
        if h.nesterov {
            q += "&nesterov=1";
        }
        if h.optimizer == Optimizer::AdamW {
            q += "&optimizer=adamw";
        }
        if h.lr_groups != no_groups() {
            q += &format!("&lr-groups={},{},{}", h.lr_groups[0], h.lr_groups[1], h.lr_groups[2]);
        }
        if self.engine != EngineChoice::Auto {
            q += if self.engine == EngineChoice::Gpu { "&engine=gpu" } else { "&engine=cpu" };
        }
        if let Some(n) = self.limit {
            q += &format!("&limit={n}");
        }
        if self.autostart {
            q += "&autostart=1";
        }
        if self.projector {
            q += "&view=projector";
        }
        q
    }
}

/// A network setting: LeNet-shaped ("lenet", "wide", C1-C2-F1-F2 or their text) gives its
/// widths; any other network that fits gives its canonical text beside LeNet's widths.
pub fn parse_net(v: &str) -> Result<(Arch, Option<String>), String> {
    match Arch::parse(v) {
        Ok(a) => Ok((a, None)),
        Err(e) => {
            // The widths' own words for what is not a text; the text's for what is.
            let net = crate::net::text::parse(v).map_err(|te| if v.contains('(') || v.contains(' ') { te } else { e })?;
            net.infer()?;
            // A LeNet-shaped text the widths' parser did not take (spaces around it) is still
            // LeNet's: one network, one setting, so a link reads back as itself.
            match crate::net::text::as_lenet_shaped(&net).filter(Arch::in_limits) {
                Some(a) => Ok((a, None)),
                None => Ok((Arch::LENET, Some(crate::net::text::print(&net)))),
            }
        }
    }
}

/// A query value: spaces as '+', and '%', '+', '&', '#' escaped.
fn query_encode(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            ' ' => "+".to_string(),
            '%' | '+' | '&' | '#' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// %XX and '+' decoding of a query value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match v.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(x) => {
                    out.push(x);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_presets_the_controls() {
        let (s, problems) = Settings::from_query("?batch=64&lr=0.01&epochs=1&autostart=1&data=full&weight-decay=5e-4&seed=7&engine=cpu&limit=500&view=projector");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.hyper, Hyper { batch: 64, lr: 0.01, epochs: 1, weight_decay: 5e-4, seed: 7, momentum: 0.9, ..Hyper::default() });
        assert!(s.autostart);
        assert_eq!((s.dataset, s.engine, s.limit, s.projector), (DatasetChoice::Full, EngineChoice::Cpu, Some(500), true));
        // The link round-trips.
        assert_eq!(Settings::from_query(&s.to_query()).0, s);
        assert_eq!(Settings::from_query("").0, Settings::default());
        // Past the recipe: augmentation and a schedule, also round-tripping.
        let (s, problems) = Settings::from_query("augment=flip%2Ccrop&schedule=step:10:0.1&epochs=30&net=wide");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(s.hyper.flip && s.hyper.crop);
        assert_eq!(s.hyper.net, Arch::WIDE);
        assert_eq!(s.hyper.schedule, Schedule::Step { every: 10, gamma: 0.1 });
        assert_eq!(Settings::from_query(&s.to_query()).0, s);
        let (s, problems) = Settings::from_query("augment=rotate&schedule=linear&net=huge");
        assert_eq!((s.hyper.flip, s.hyper.crop, s.hyper.schedule, s.hyper.net), (false, false, Schedule::Constant, Arch::LENET));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(Settings::from_query("net=4-5-7-6").0.hyper.net, Arch { c1: 4, c2: 5, f1: 7, f2: 6 });
        // A run trained on a dropped archive is recorded as one, and reads back as one.
        let (s, problems) = Settings::from_query("data=file&limit=300");
        assert!(problems.is_empty() && s.dataset == DatasetChoice::File, "{problems:?}");
        assert!(s.to_query().contains("data=file") && Settings::from_query(&s.to_query()).0 == s);
    }

    #[test]
    fn a_bad_link_keeps_the_recipe_and_says_what_was_wrong() {
        let (s, problems) = Settings::from_query("batch=0&lr=-1&momentum=1.5&epochs=x&colour=red&data=imagenet&lr=1e-2");
        assert_eq!(s.hyper.batch, 4);
        assert_eq!(s.hyper.momentum, 0.9);
        assert_eq!(s.hyper.epochs, 2);
        assert_eq!(s.hyper.lr, 0.01, "a later good value wins");
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(problems[0].starts_with("batch=0: the batch size"), "{}", problems[0]);
        assert!(problems.iter().any(|p| p.starts_with("colour: unknown setting")));
        assert_eq!(Settings::from_query("lr=1e%2D3").0.hyper.lr, 1e-3, "percent-encoded values decode");
    }

    #[test]
    fn schedules() {
        let s = Schedule::Step { every: 10, gamma: 0.1 };
        assert_eq!(s.lr(0.05, 1, 30), 0.05);
        assert_eq!(s.lr(0.05, 10, 30), 0.05);
        assert!((s.lr(0.05, 11, 30) - 0.005).abs() < 1e-9);
        assert!((s.lr(0.05, 21, 30) - 0.0005).abs() < 1e-9);
        let c = Schedule::Cosine;
        assert_eq!(c.lr(0.1, 1, 4), 0.1);
        assert!((c.lr(0.1, 3, 4) - 0.05).abs() < 1e-7, "halfway is half");
        assert!(c.lr(0.1, 4, 4) > 0.0 && c.lr(0.1, 4, 4) < 0.02);
        assert_eq!(Schedule::Constant.lr(0.001, 7, 2), 0.001);
        for text in ["constant", "cosine", "step:10:0.1"] {
            assert_eq!(Schedule::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "step", "step:0:0.1", "step:5", "step:5:-1", "step:5:0.1:2", "linear"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    /// Any network that fits is a setting of its own (its canonical text), read back from its
    /// link; a LeNet-shaped text stays LeNet's widths; one that does not fit is refused with
    /// the layer that does not.
    #[test]
    fn any_network_is_a_setting_and_its_link_reads_back() {
        let (s, problems) = Settings::from_query("net=conv(8,3,pad=1,bias=0)+bn(eps=1e-3)+relu+res(conv(8,3,pad=1)+bn)+gap+flatten+linear(10)+scale(0.125)");
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(s.hyper.layers.as_deref(), Some("conv(8,3,pad=1,bias=0) bn(eps=0.001) relu res(conv(8,3,pad=1) bn) gap flatten linear(10) scale(0.125)"));
        assert!(s.to_query().ends_with("&net=conv(8,3,pad=1,bias=0)+bn(eps=0.001)+relu+res(conv(8,3,pad=1)+bn)+gap+flatten+linear(10)+scale(0.125)"), "{}", s.to_query());
        assert_eq!(Settings::from_query(&s.to_query()).0, s);
        let (s, _) = Settings::from_query("net=+20-32-256-128+");
        assert_eq!((s.hyper.net, s.hyper.layers), (Arch::WIDE, None));
        let (s, problems) = Settings::from_query("net=conv(8,3)+flatten+linear(11)");
        assert_eq!(s.hyper.layers, None);
        assert!(problems[0].starts_with("net=conv(8,3) flatten linear(11): the network ends with 11 (layer 3, linear(11))"), "{problems:?}");
    }

    /// Label smoothing and Nesterov are settings with the same words in the link and the CLI;
    /// with them LeNet trains on the engines of any network, as its own text.
    #[test]
    fn label_smoothing_and_nesterov_are_settings() {
        let (s, problems) = Settings::from_query("label-smoothing=0.2&nesterov=1");
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!((s.hyper.label_smoothing, s.hyper.nesterov), (0.2, true));
        assert!(s.to_query().ends_with("&label-smoothing=0.2&nesterov=1"), "{}", s.to_query());
        assert_eq!(Settings::from_query(&s.to_query()).0, s);
        assert_eq!(s.hyper.layers_text().as_deref(), Some("lenet"));
        assert_eq!(Hyper::default().layers_text(), None);
        let (_, problems) = Settings::from_query("label-smoothing=1&nesterov=maybe&lr-groups=1,0,2");
        assert_eq!(
            problems,
            [
                "label-smoothing=1: label smoothing must be a number from 0 to below 1",
                "nesterov=maybe: nesterov is 1 (on) or 0 (off)",
                "lr-groups=1,0,2: the learning-rate multipliers are three numbers above 0: weights,biases,norm (e.g. 1,64,64)"
            ]
        );
        let (s, _) = Settings::from_query("optimizer=adamw");
        assert_eq!((s.hyper.optimizer, s.to_query().ends_with("&optimizer=adamw"), s.hyper.layers_text().is_some()), (Optimizer::AdamW, true, true));
        assert_eq!(Settings::from_query("optimizer=adam").1, ["optimizer=adam: the optimizer is 'sgd' or 'adamw'"]);
        let (s, _) = Settings::from_query("lr-groups=1,64,64");
        assert_eq!((s.hyper.lr_groups, s.to_query().ends_with("&lr-groups=1,64,64")), ([1.0, 64.0, 64.0], true));
        assert_eq!(Settings::from_query(&s.to_query()).0, s);
    }

    /// The warm-up schedule is numpy's interp over [0, warm, total] of [start, 1, end], step by
    /// step, read back from its words.
    #[test]
    fn the_warmup_schedule_interpolates_per_step() {
        let w = Schedule::parse("warmup:0.23:0.2:0.07").unwrap();
        assert_eq!(w.to_string(), "warmup:0.23:0.2:0.07");
        // 100 steps: warm-up over steps 0..23 (23 = floor(0.23 x 100)), then down to 0.07 at 100.
        let f = |s| w.step_factor(s, 100);
        assert!((f(0) - 0.2).abs() < 1e-7 && (f(23) - 1.0).abs() < 1e-7 && (f(100) - 0.07).abs() < 1e-6);
        assert!((f(10) - (0.2 + 0.8 * 10.0 / 23.0) as f32).abs() < 1e-6 && (f(50) - (1.0 - 0.93 * 27.0 / 77.0) as f32).abs() < 1e-6);
        assert_eq!((Schedule::Cosine.step_factor(5, 10), w.lr(0.5, 3, 10)), (1.0, 0.5));
        assert!(Schedule::parse("warmup:2:0.2:0.1").is_err() && Schedule::parse("warmup:0.2:0.1").is_err());
        let (s, _) = Settings::from_query("schedule=warmup:0.23:0.2:0.07");
        assert!(s.hyper.layers_text().is_some(), "trained by the engines of any network");
    }
}
