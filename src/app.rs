//! The page's logic that does not touch the browser, so it is tested natively: the settings a
//! link can preset (`?batch=64&lr=0.01&epochs=1&autostart=1`), the curves drawn live, the test
//! images of the prediction grid, and the small formatting the page shows.

use crate::data::Split;
use crate::model::{Hyper, CLASSES};

/// Which dataset the page trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetChoice {
    /// The 2,000 + 1,000 records served beside the page (data/sample).
    Sample,
    /// The official cifar-10-binary.tar.gz, fetched from the page's server (data/).
    Full,
}

/// Which engine the page asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// WebGPU when the browser has it, else the CPU engine.
    Auto,
    Gpu,
    Cpu,
}

/// Everything a link can preset.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub hyper: Hyper,
    pub dataset: DatasetChoice,
    pub engine: EngineChoice,
    pub autostart: bool,
    /// Train on the first N training images only (a quick demo, or a test).
    pub limit: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { hyper: Hyper::default(), dataset: DatasetChoice::Sample, engine: EngineChoice::Auto, autostart: false, limit: None }
    }
}

/// Largest batch the page offers: the step's activations stay far below WebGPU's 128 MiB
/// binding limit (batch 1024 is ~40 MiB of activations).
pub const MAX_BATCH: usize = 1024;
pub const MAX_EPOCHS: usize = 1000;

fn parse_num<T: std::str::FromStr>(key: &str, v: &str, ok: impl Fn(&T) -> bool, rule: &str) -> Result<T, String> {
    match v.trim().parse::<T>() {
        Ok(x) if ok(&x) => Ok(x),
        _ => Err(format!("{key}={v}: {rule}")),
    }
}

impl Settings {
    /// Check one control's value (`key` as in the URL and the control ids) and set it.
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        let h = &mut self.hyper;
        match key {
            "batch" => h.batch = parse_num(key, v, |b: &usize| (1..=MAX_BATCH).contains(b), "the batch size must be a whole number from 1 to 1024")?,
            "epochs" => h.epochs = parse_num(key, v, |e: &usize| (1..=MAX_EPOCHS).contains(e), "epochs must be a whole number from 1 to 1000")?,
            "lr" => h.lr = parse_num(key, v, |x: &f32| x.is_finite() && *x > 0.0, "the learning rate must be a number above 0")?,
            "momentum" => h.momentum = parse_num(key, v, |x: &f32| (0.0..1.0).contains(x), "momentum must be a number from 0 to below 1")?,
            "weight-decay" | "weight_decay" | "wd" => h.weight_decay = parse_num(key, v, |x: &f32| x.is_finite() && *x >= 0.0, "weight decay must be a number of 0 or more")?,
            "seed" => h.seed = parse_num(key, v, |_: &u64| true, "the seed must be a whole number from 0")?,
            "limit" => self.limit = Some(parse_num(key, v, |n: &usize| *n >= 1, "limit must be a whole number of training images, 1 or more")?),
            "data" | "dataset" => {
                self.dataset = match v {
                    "sample" => DatasetChoice::Sample,
                    "full" | "cifar10" => DatasetChoice::Full,
                    _ => return Err(format!("{key}={v}: the dataset is 'sample' or 'full'")),
                }
            }
            "engine" => {
                self.engine = match v {
                    "auto" => EngineChoice::Auto,
                    "gpu" => EngineChoice::Gpu,
                    "cpu" => EngineChoice::Cpu,
                    _ => return Err(format!("{key}={v}: the engine is 'auto', 'gpu' or 'cpu'")),
                }
            }
            "autostart" => self.autostart = matches!(v, "1" | "true" | "yes" | ""),
            "augment" => (h.flip, h.crop) = crate::augment::parse_augment(v).map_err(|e| format!("{key}={v}: {e}"))?,
            "schedule" => h.schedule = crate::augment::Schedule::parse(v).map_err(|e| format!("{key}={v}: {e}"))?,
            "net" => h.net = crate::model::Arch::parse(v).map_err(|e| format!("{key}={v}: {e}"))?,
            _ => return Err(format!("{key}: unknown setting (known: batch, epochs, lr, momentum, weight-decay, seed, data, engine, limit, autostart, augment, schedule, net)")),
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
        let mut q = format!(
            "?batch={}&lr={}&momentum={}&weight-decay={}&epochs={}&seed={}&data={}",
            h.batch,
            h.lr,
            h.momentum,
            h.weight_decay,
            h.epochs,
            h.seed,
            if self.dataset == DatasetChoice::Full { "full" } else { "sample" }
        );
        if h.flip || h.crop {
            q += &format!("&augment={}", crate::augment::augment_name(h.flip, h.crop));
        }
        if h.schedule != crate::augment::Schedule::Constant {
            q += &format!("&schedule={}", h.schedule);
        }
        if h.net != crate::model::Arch::LENET {
            q += &format!("&net={}", h.net.name());
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
        q
    }
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

/// The live curves: x is epochs done (fractional), y the value.
#[derive(Clone, Debug, Default)]
pub struct Curves {
    pub loss: Vec<(f64, f64)>,
    pub train_accuracy: Vec<(f64, f64)>,
    pub test_accuracy: Vec<(f64, f64)>,
}

/// The test records of the prediction grid: the first `per_class` of each class, in class
/// order, so every class shows.
pub fn grid_records(test: &Split, per_class: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for c in 0..CLASSES as u8 {
        out.extend(test.labels.iter().enumerate().filter(|(_, &l)| l == c).take(per_class).map(|(i, _)| i as u32));
    }
    out
}

/// The `k` most probable classes, most probable first.
pub fn top_k(p: &[f32; CLASSES], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..CLASSES).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|c| (c, p[c])).collect()
}

/// "2 h 05 min", "3 min 07 s", "12 s".
pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// Round axis ticks covering [lo, hi]: about `n` of them at 1, 2 or 5 times a power of ten.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(hi > lo) || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let e = raw.log10().floor() as i32;
    let mag = 10f64.powi(e);
    let m = [1i64, 2, 5, 10].into_iter().find(|&m| m as f64 * mag >= raw).unwrap_or(10);
    let step = m as f64 * mag;
    // Each tick is an integer scaled by a power of ten in one rounding, so it prints as the
    // short decimal it is ("0.6", not the 0.6000000000000001 of 3 * 0.2).
    let at = |i: i64| if e < 0 { (i * m) as f64 / 10f64.powi(-e) } else { (i * m) as f64 * mag };
    // The ends count when they are a tick but for rounding (0.7 / 0.1 = 6.999...).
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(at).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_presets_the_controls() {
        let (s, problems) = Settings::from_query("?batch=64&lr=0.01&epochs=1&autostart=1&data=full&weight-decay=5e-4&seed=7&engine=cpu&limit=500");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.hyper, Hyper { batch: 64, lr: 0.01, epochs: 1, weight_decay: 5e-4, seed: 7, momentum: 0.9, ..Hyper::default() });
        assert!(s.autostart);
        assert_eq!((s.dataset, s.engine, s.limit), (DatasetChoice::Full, EngineChoice::Cpu, Some(500)));
        // The link round-trips.
        assert_eq!(Settings::from_query(&s.to_query()).0, s);
        assert_eq!(Settings::from_query("").0, Settings::default());
        // Past the recipe: augmentation and a schedule, also round-tripping.
        let (s, problems) = Settings::from_query("augment=flip%2Ccrop&schedule=step:10:0.1&epochs=30&net=wide");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(s.hyper.flip && s.hyper.crop);
        assert_eq!(s.hyper.net, crate::model::Arch::WIDE);
        assert_eq!(s.hyper.schedule, crate::augment::Schedule::Step { every: 10, gamma: 0.1 });
        assert_eq!(Settings::from_query(&s.to_query()).0, s);
        let (s, problems) = Settings::from_query("augment=rotate&schedule=linear&net=huge");
        assert_eq!((s.hyper.flip, s.hyper.crop, s.hyper.schedule, s.hyper.net), (false, false, crate::augment::Schedule::Constant, crate::model::Arch::LENET));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(Settings::from_query("net=4-5-7-6").0.hyper.net, crate::model::Arch { c1: 4, c2: 5, f1: 7, f2: 6 });
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
    fn the_grid_shows_every_class_and_top_k_orders() {
        let test = Split { images: vec![0; 30 * 3072], labels: (0..30).map(|i| (i * 7 % 10) as u8).collect() };
        let g = grid_records(&test, 2);
        assert_eq!(g.len(), 20);
        for (k, &i) in g.iter().enumerate() {
            assert_eq!(test.labels[i as usize] as usize, k / 2);
        }
        let p = [0.05, 0.3, 0.0, 0.4, 0.05, 0.0, 0.2, 0.0, 0.0, 0.0];
        assert_eq!(top_k(&p, 3), vec![(3, 0.4), (1, 0.3), (6, 0.2)]);
    }

    #[test]
    fn durations_and_ticks_read_well() {
        assert_eq!(format_duration(12.4), "12 s");
        assert_eq!(format_duration(187.0), "3 min 07 s");
        assert_eq!(format_duration(7500.0), "2 h 05 min");
        assert_eq!(format_duration(f64::INFINITY), "-");
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        // The chart labels print the ticks as they are: short decimals, at every scale.
        let labels = |v: Vec<f64>| v.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(" ");
        assert_eq!(labels(ticks(0.0, 1.0, 6)), "0 0.2 0.4 0.6 0.8 1");
        assert_eq!(labels(ticks(0.0, 0.7, 7)), "0 0.1 0.2 0.3 0.4 0.5 0.6 0.7");
        assert_eq!(labels(ticks(0.0, 0.07, 7)), "0 0.01 0.02 0.03 0.04 0.05 0.06 0.07");
        assert_eq!(labels(ticks(1.7, 2.45, 5)), "1.8 2 2.2 2.4");
        assert_eq!(labels(ticks(0.0, 30.0, 6)), "0 5 10 15 20 25 30");
        assert_eq!(labels(ticks(0.0, 3000.0, 6)), "0 500 1000 1500 2000 2500 3000");
        assert_eq!(ticks(0.0, 2.3, 4), vec![0.0, 1.0, 2.0]);
        assert_eq!(ticks(1.0, 1.0, 4), vec![1.0]);
    }
}
